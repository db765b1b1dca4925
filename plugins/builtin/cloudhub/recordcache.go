package cloudhub

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/pki"
)

// recordCache keeps, per node, the serials of its revoked certificates as its join record lists
// them, so a connection does not read the record (a file, or a Secret from the API server) each
// time: a reconnect storm of 10,000 nodes would otherwise be 10,000 reads at once. An entry is
// dropped when this process updates the node's record (a replacing join on this certificate
// server: invalidatingRecords), and read again after ttl at the latest, which bounds how long a
// revocation made elsewhere (another replica, sharing the records in Secrets) goes unseen.
type recordCache struct {
	recs pki.Records
	ttl  time.Duration

	mu     sync.Mutex
	byNode map[string]cachedRecord
	gen    uint64 // bumped by every invalidate, so a read that raced with one is not kept (they are rare)

	lookups *prometheus.CounterVec // result=hit|miss
}

type cachedRecord struct {
	revoked map[string]struct{} // serials (hex); nil: none
	at      time.Time
}

func newRecordCache(recs pki.Records, ttl time.Duration, lookups *prometheus.CounterVec) *recordCache {
	return &recordCache{recs: recs, ttl: ttl, byNode: map[string]cachedRecord{}, lookups: lookups}
}

// revoked says whether node's record lists serial as revoked.
func (c *recordCache) revoked(ctx context.Context, node, serial string) (bool, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.byNode[node]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl {
		c.lookups.WithLabelValues("hit").Inc()
		_, r := e.revoked[serial]
		return r, nil
	}
	c.lookups.WithLabelValues("miss").Inc()
	rec, _, err := pki.GetNodeRecord(ctx, c.recs, node)
	if err != nil {
		return false, err
	}
	e = cachedRecord{at: now}
	for _, r := range rec.Revoked {
		if e.revoked == nil {
			e.revoked = map[string]struct{}{}
		}
		e.revoked[r.Serial] = struct{}{}
	}
	c.mu.Lock()
	if c.gen == gen {
		c.byNode[node] = e
	}
	c.mu.Unlock()
	return rec.IsRevoked(serial), nil
}

// invalidate forgets node's entry: its record changed.
func (c *recordCache) invalidate(node string) {
	c.mu.Lock()
	delete(c.byNode, node)
	c.gen++
	c.mu.Unlock()
}

// sweep drops expired entries, so nodes that are gone hold no memory.
func (c *recordCache) sweep(now time.Time) {
	if c == nil { // not started
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for node, e := range c.byNode {
		if now.Sub(e.at) >= c.ttl {
			delete(c.byNode, node)
		}
	}
}

// invalidatingRecords is the certificate server's view of the records: an update of a node's record
// (a join, a renewal, a replacing join that revokes) drops that node from the cache first and after.
type invalidatingRecords struct {
	pki.Records
	cache *recordCache
}

func (r invalidatingRecords) Update(ctx context.Context, kind pki.Kind, name string, fn func(old []byte) ([]byte, error)) error {
	if kind != pki.KindNode {
		return r.Records.Update(ctx, kind, name, fn)
	}
	r.cache.invalidate(name)
	defer r.cache.invalidate(name)
	return r.Records.Update(ctx, kind, name, fn)
}
