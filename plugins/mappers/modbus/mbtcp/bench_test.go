package mbtcp_test

import (
	"context"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// BenchmarkReadHoldingRegisters reads 2 holding registers from the libmodbus server, sequentially
// over one connection, and reports reads/s.
func BenchmarkReadHoldingRegisters(b *testing.B) {
	srv := mbserver.Start(b)
	c := mbtcp.NewClient(srv.Addr(), mbtcp.Options{UnitID: 1, Timeout: 2 * time.Second})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.ReadHoldingRegisters(ctx, 0, 2); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := c.ReadHoldingRegisters(ctx, 0, 2); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
	if n := c.Dials(); n != 1 {
		b.Fatalf("%d connections, want 1", n)
	}
}
