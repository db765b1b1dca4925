package store

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// Both durability settings are measured, so the cost of FULL is visible next to NORMAL.
var syncModes = []string{"full", "normal"}

var benchValue = bytes.Repeat([]byte("x"), 512) // about the size of a small Kubernetes object

func benchKeys(n int) []Key {
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Type: "pod", Namespace: "default", Name: fmt.Sprintf("pod-%05d", i)}
	}
	return keys
}

func reportRate(b *testing.B, perOp float64, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)*perOp/s, unit)
	}
}

func BenchmarkPutSingle(b *testing.B) {
	for _, sync := range syncModes {
		b.Run("sync="+sync, func(b *testing.B) {
			db, _ := openTest(b, Options{Synchronous: sync})
			objs, keys, ctx := db.Objects("meta"), benchKeys(1000), context.Background()
			rv := uint64(0)
			for b.Loop() {
				rv++
				if _, err := objs.Put(ctx, Object{Key: keys[rv%uint64(len(keys))], ResourceVersion: rv, Value: benchValue}); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, 1, "ops/s")
		})
	}
}

func BenchmarkPutBatch1000(b *testing.B) {
	for _, sync := range syncModes {
		b.Run("sync="+sync, func(b *testing.B) {
			db, _ := openTest(b, Options{Synchronous: sync})
			objs, keys, ctx := db.Objects("meta"), benchKeys(10_000), context.Background()
			batch := make([]Object, 1000)
			rv, next := uint64(0), 0
			for b.Loop() {
				for i := range batch {
					rv++
					batch[i] = Object{Key: keys[next%len(keys)], ResourceVersion: rv, Value: benchValue}
					next++
				}
				if _, err := objs.PutBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, 1, "ops/s")
			reportRate(b, float64(len(batch)), "objs/s")
		})
	}
}

func BenchmarkGet(b *testing.B) {
	db, _ := openTest(b, Options{})
	objs, keys, ctx := db.Objects("meta"), benchKeys(10_000), context.Background()
	batch := make([]Object, len(keys))
	for i, k := range keys {
		batch[i] = Object{Key: k, ResourceVersion: 1, Value: benchValue}
	}
	if _, err := objs.PutBatch(ctx, batch); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if _, err := objs.Get(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportRate(b, 1, "ops/s")
}

func BenchmarkOutboxEnqueue(b *testing.B) {
	for _, sync := range syncModes {
		b.Run("sync="+sync, func(b *testing.B) {
			db, _ := openTest(b, Options{Synchronous: sync, OutboxMax: -1})
			q, ctx := db.Outbox(), context.Background()
			for b.Loop() {
				if _, err := q.Enqueue(ctx, benchValue); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, 1, "ops/s")
		})
	}
}
