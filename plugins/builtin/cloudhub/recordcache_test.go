package cloudhub

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReconnectsReadTheJoinRecordOnceWithinTheCacheTTL proves a node that connects again and again
// costs one read of its join record per recordCacheTTL, not one per connection (a reconnect storm of
// every node would otherwise read every record at once); with a TTL shorter than the gap between
// connections every connection reads it. Invalidation on a replacing join is proven by
// TestHubRefusesACertificateRevokedByAReplacingJoin, whose first dial fills the cache.
func TestReconnectsReadTheJoinRecordOnceWithinTheCacheTTL(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ttl        time.Duration
		wantMisses float64
	}{
		{"within the TTL: one read", time.Hour, 1},
		{"past the TTL: a read per connection", time.Nanosecond, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCloud(t, func(m *Module) { m.RecordCacheTTL = tc.ttl })
			n := newRawNode(t, c, "edge-1")
			for range 5 {
				n.dial(c)
				_ = n.conn.Close()
				eventually(t, "edge-1 to be disconnected", func() bool { return !c.connected("edge-1") })
			}
			misses := testutil.ToFloat64(c.hub.metrics.recordLookups.WithLabelValues("miss"))
			hits := testutil.ToFloat64(c.hub.metrics.recordLookups.WithLabelValues("hit"))
			if misses != tc.wantMisses || misses+hits != 5 {
				t.Fatalf("record lookups: %v misses, %v hits; want %v misses of 5", misses, hits, tc.wantMisses)
			}
		})
	}
}
