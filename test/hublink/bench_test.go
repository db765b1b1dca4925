package hublink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/pki"
)

func inUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// BenchmarkIdleNodesThroughCloudhub connects 1,000 simulated edges — each with its own node
// certificate, an mTLS websocket and a reader, as edgehub holds them — to a real cloudhub, and
// reports the memory one idle connected node costs this process (both ends of the link, cloudhub's
// session and queue included; the transport alone is ~26 KiB per end, see host/hub).
func BenchmarkIdleNodesThroughCloudhub(b *testing.B) {
	const nodes = 1000
	for b.Loop() {
		l := &link{dir: b.TempDir(), hbeat: 15 * time.Second,
			ctl: &recorder{name: "edgecontroller"}, events: &recorder{name: "cloudevents"}}
		cloud := startHost(b, "cloudcore-bench", filepath.Join(l.dir, "cloud.db"), cloudModules(l))
		ca, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: filepath.Join(l.dir, "pki")})
		if err != nil {
			b.Fatal(err)
		}
		certs := make([]tls.Certificate, nodes)
		for i := range certs {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			cert, err := ca.IssueNodeCert(key.Public(), fmt.Sprintf("edge-%04d", i), time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			certs[i] = tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		}
		before := inUse()
		ctx, cancel := context.WithCancel(context.Background())
		conns := make([]*hub.Conn, nodes)
		for i := range conns {
			c, err := hub.Dial(ctx, hub.DialOptions{
				URL:    "wss://" + l.hub.Address,
				TLS:    &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{certs[i]}, ServerName: "localhost"},
				NodeID: fmt.Sprintf("edge-%04d", i), Options: hub.Options{Heartbeat: 15 * time.Second},
			})
			if err != nil {
				b.Fatalf("edge %d: %v", i, err)
			}
			conns[i] = c
			go func() {
				for {
					if _, err := c.Receive(ctx); err != nil {
						return
					}
				}
			}()
		}
		deadline := time.Now().Add(time.Minute)
		for l.events.count(message.OpConnected) < nodes && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := l.events.count(message.OpConnected); got < nodes {
			b.Fatalf("cloudhub saw %d of %d nodes connect", got, nodes)
		}
		time.Sleep(time.Second) // settle: handshakes done, buffers returned to pools
		after := inUse()
		b.ReportMetric(float64(after-before)/nodes, "bytes/node")
		b.ReportMetric(float64(runtime.NumGoroutine())/nodes, "goroutines/node")
		cancel()
		for _, c := range conns {
			_ = c.Close()
		}
		cloud.stop()
	}
}
