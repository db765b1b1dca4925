package hub

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub/internal/testca"
	"github.com/kedge-io/kedge/host/message"
)

// cpuTime is this process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkConnThroughput1KiB sends messages with 1 KiB of content one way over one TLS websocket on
// loopback, sender and receiver in this process. msgs/s is wall-clock throughput; msgs/cpu-s divides
// by the CPU time both ends used, i.e. messages per second per core.
func BenchmarkConnThroughput1KiB(b *testing.B) {
	edge, cloud, _ := pair(b, Options{}, Options{})
	m := message.New("edged", "resource", message.OpUpdate, "default/pod/nginx")
	m.Content = json.RawMessage(`"` + strings.Repeat("k", 1022) + `"`)
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
	ctx := context.Background()
	for range b.N {
		if err := edge.Send(ctx, m); err != nil {
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

// BenchmarkIdleConnMemory holds 1,000 idle TLS hub connections in this process, both ends, each end
// with its Receive goroutine and 1s heartbeats running, and reports the heap and stack they use
// (runtime.MemStats HeapInuse+StackInuse, after GC) per connection: bytes/conn counts both ends,
// bytes/end is half of it, what one side (a cloudhub per node, or an edge) pays; stack-bytes/end is
// the Receive goroutine's stack in that.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 1000
	const hb = time.Second
	ca := testca.New(b)
	h := startHub(b, ca, AcceptOptions{Options: Options{Heartbeat: hb}})
	nodeTLS := ca.NodeTLS(b, ca, "edge-1") // one certificate: the hub accepts a node many times
	url := h.url("edge-1")
	for range b.N {
		var stacks uint64
		inuse := func() uint64 {
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			stacks = ms.StackInuse
			return ms.HeapInuse + ms.StackInuse
		}
		before := inuse()
		stacksBefore := stacks
		conns := make([]*Conn, 0, 2*n)
		var wg sync.WaitGroup
		read := func(c *Conn) {
			defer wg.Done()
			for {
				if _, err := c.Receive(context.Background()); err != nil {
					return
				}
			}
		}
		for range n {
			edge, err := Dial(context.Background(), DialOptions{URL: url, TLS: nodeTLS, NodeID: "edge-1",
				Options: Options{Heartbeat: hb, Logger: quiet}})
			if err != nil {
				b.Fatal(err)
			}
			cloud := h.accepted(b)
			conns = append(conns, edge, cloud)
			wg.Add(2)
			go read(edge)
			go read(cloud)
		}
		time.Sleep(3 * hb) // a few heartbeats each way, so every buffer the steady state needs exists
		after := inuse()
		perConn := float64(after-before) / n
		b.ReportMetric(perConn, "bytes/conn")
		b.ReportMetric(perConn/2, "bytes/end")
		b.ReportMetric(float64(stacks-stacksBefore)/(2*n), "stack-bytes/end")
		if s := h.metrics.Stats(); s.HeartbeatTimeouts != 0 || s.Connections != n {
			b.Fatalf("hub has %d connections and %d heartbeat timeouts, want %d and 0", s.Connections, s.HeartbeatTimeouts, n)
		}
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}
}

// BenchmarkLanes1KiB compares the lanes in one run: Kedge's (header + protobuf frames) and KubeEdge's
// JSON lane (one JSON text frame), each over one TLS websocket (the QUIC lane's is
// host/hub/quichub's BenchmarkQUICLane1KiB): a 1 KiB object one way on loopback, sender
// and receiver in this process; msgs/cpu-s counts both ends' CPU.
func BenchmarkLanes1KiB(b *testing.B) {
	for _, lane := range []string{LaneKedge.String(), LaneKubeEdge.String()} {
		b.Run(lane, func(b *testing.B) {
			ca := testca.New(b)
			h := startHub(b, ca, AcceptOptions{})
			edge, err := Dial(context.Background(), DialOptions{URL: h.url("edge-1"), TLS: ca.NodeTLS(b, ca, "edge-1"), NodeID: "edge-1",
				KubeEdgeLane: lane == LaneKubeEdge.String(), Options: Options{Logger: quiet}})
			if err != nil {
				b.Fatal(err)
			}
			cloud := h.accepted(b)
			if cloud.Lane().String() != lane {
				b.Fatalf("lane %s, want %s", cloud.Lane(), lane)
			}
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
		})
	}
}
