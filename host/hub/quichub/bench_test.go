package quichub

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/hub/internal/testca"
	"github.com/kedge-io/kedge/host/message"
)

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkQUICLane1KiB is host/hub's BenchmarkLanes1KiB on the QUIC lane (the same header + protobuf
// frames on a QUIC stream, TLS 1.3 inside QUIC): a 1 KiB object one way on loopback, sender and
// receiver in this process; msgs/cpu-s counts both ends' CPU.
func BenchmarkQUICLane1KiB(b *testing.B) {
	ca := testca.New(b)
	h := startQUICHub(b, ca, hub.AcceptOptions{})
	edge, err := Dial(context.Background(), hub.DialOptions{URL: h.url(), TLS: ca.NodeTLS(b, ca, "edge-1"), NodeID: "edge-1", Options: hub.Options{Logger: quiet}})
	if err != nil {
		b.Fatal(err)
	}
	cloud := h.accepted(b)
	defer edge.Close()
	m := message.New("edged", "resource", message.OpUpdate, "default/pod/nginx")
	m.Content = json.RawMessage(`{"metadata":{"name":"nginx","namespace":"default"},"data":"` + strings.Repeat("k", 970) + `"}`)
	done := make(chan error, 1)
	b.SetBytes(int64(len(m.Content)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, start := cpuTime(b), time.Now()
	go func() {
		for range b.N {
			if _, err := cloud.Receive(context.Background()); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range b.N {
		if err := edge.Send(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	wall, cpu := time.Since(start), cpuTime(b)-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/wall.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "msgs/cpu-s")
}
