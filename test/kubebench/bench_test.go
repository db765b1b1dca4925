package kubebench

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
)

const (
	benchPods     = 1000
	benchCreators = 4
)

// BenchmarkPodCreateToEdgeStore measures how long a pod takes from its create call in the Kubernetes
// API to being stored in its edge node's SQLite, over 1,000 pods created by 4 concurrent creators
// as fast as the API server takes them, spread round-robin over every connected node (nodes=1: all on
// the one node; nodes=100: 10 per node). Each iteration is 1,000 new pods; the rig (control plane,
// cloud, joined and reconciled edges) is set up once, outside the timing.
//
// Latency of a pod = when the edge's consumer was told (after metamanager's SQLite write) minus the
// time just before its create call, both from this process's monotonic clock; so it includes the
// API write (create-p50-ms reports that part alone). pods/s = pods / (last arrival - first create
// call); created/s = pods / (last create return - first create call), the rate the API took them.
// watch-p50/p99-ms: from the same start to a plain watch of the namespace in this process seeing the
// pod added — the API server's share (edgecontroller's informer sees it at about that time); the rest
// of p50/p99 is Kedge: edgecontroller, cloudhub, the TLS link, edgehub, metamanager's SQLite write.
func BenchmarkPodCreateToEdgeStore(b *testing.B) {
	for _, bc := range []struct {
		name  string
		nodes int
		opts  options
	}{
		{"nodes=1", 1, options{}},
		{"nodes=100", 100, options{}},
		// What bounds one busy node: the same without cloudhub's per-node pacing (qps 200, burst 400
		// by default), then also with the edge's store at synchronous=normal (no fsync per write).
		{"nodes=1,hub-qps=1e6", 1, options{hub: unpaced}},
		{"nodes=1,hub-qps=1e6,edge-sync=normal", 1, options{hub: unpaced, edgeSync: "normal"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := newRig(b, fmt.Sprintf("bench%d", bc.nodes), bc.nodes, bc.opts)
			var lat, create, watched []time.Duration
			var pods int
			var busy, creating time.Duration
			iter := 0
			for b.Loop() {
				before, seen := r.all.count(), r.watchedCount()
				made := r.createPods(fmt.Sprintf("b%d", iter), benchPods, benchCreators)
				r.waitProgress("pods stored on their edge nodes", r.all.count, before+benchPods)
				r.waitProgress("pods seen by the namespace watch", r.watchedCount, seen+benchPods)
				first, last, lastCreate := made[0].start, time.Time{}, time.Time{}
				for _, c := range made {
					got := r.all.of(r.ns + "/" + c.name)
					if len(got) != 1 || got[0].node != c.node {
						b.Fatalf("pod %s bound to %s arrived %v", c.name, c.node, got)
					}
					lat = append(lat, got[0].at.Sub(c.start))
					create = append(create, c.taken.Sub(c.start))
					if w := r.watchedAt(c.name); !w.IsZero() {
						watched = append(watched, w.Sub(c.start))
					}
					if c.start.Before(first) {
						first = c.start
					}
					if c.taken.After(lastCreate) {
						lastCreate = c.taken
					}
					if got[0].at.After(last) {
						last = got[0].at
					}
				}
				pods += benchPods
				busy += last.Sub(first)
				creating += lastCreate.Sub(first)
				iter++
			}
			slices.Sort(lat)
			slices.Sort(create)
			slices.Sort(watched)
			if len(watched) < len(lat) {
				b.Fatalf("the namespace watch saw %d of %d pods", len(watched), len(lat))
			}
			b.ReportMetric(ms(quantile(lat, 0.50)), "p50-ms")
			b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(ms(quantile(create, 0.50)), "create-p50-ms")
			b.ReportMetric(ms(quantile(watched, 0.50)), "watch-p50-ms")
			b.ReportMetric(ms(quantile(watched, 0.99)), "watch-p99-ms")
			b.ReportMetric(float64(pods)/busy.Seconds(), "pods/s")
			b.ReportMetric(float64(pods)/creating.Seconds(), "created/s")
		})
	}
}

func unpaced(h *cloudhub.Module) { h.QPS, h.Burst = 1e6, 1e6 }

// quantile is the nearest-rank q-quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
