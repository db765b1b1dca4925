package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPutAppliesOnlyNewerResourceVersions(t *testing.T) {
	k := Key{Type: "pod", Namespace: "default", Name: "web"}
	type put struct {
		rv    uint64
		value string
		want  PutResult
	}
	tests := []struct {
		name      string
		puts      []put
		wantRV    uint64
		wantValue string
	}{
		{"first put applies", []put{{5, "a", PutResult{Applied: true, Stored: 5}}}, 5, "a"},
		{"newer applies", []put{{5, "a", PutResult{Applied: true, Stored: 5}}, {6, "b", PutResult{Applied: true, Stored: 6}}}, 6, "b"},
		{"older is stale and reports stored", []put{{5, "a", PutResult{Applied: true, Stored: 5}}, {4, "b", PutResult{Applied: false, Stored: 5}}}, 5, "a"},
		{"equal is stale", []put{{5, "a", PutResult{Applied: true, Stored: 5}}, {5, "b", PutResult{Applied: false, Stored: 5}}}, 5, "a"},
		{"rv 0 overwrites newer", []put{{5, "a", PutResult{Applied: true, Stored: 5}}, {0, "b", PutResult{Applied: true, Stored: 0}}}, 0, "b"},
		{"rv 0 overwrites rv 0", []put{{0, "a", PutResult{Applied: true, Stored: 0}}, {0, "b", PutResult{Applied: true, Stored: 0}}}, 0, "b"},
		{"versioned after rv 0 applies", []put{{0, "a", PutResult{Applied: true, Stored: 0}}, {1, "b", PutResult{Applied: true, Stored: 1}}}, 1, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := openTest(t, Options{})
			objs := db.Objects("meta")
			for i, p := range tt.puts {
				got, err := objs.Put(ctx, Object{Key: k, ResourceVersion: p.rv, Value: []byte(p.value)})
				if err != nil {
					t.Fatalf("put %d: %v", i, err)
				}
				if got != p.want {
					t.Fatalf("put %d (rv %d) = %+v, want %+v", i, p.rv, got, p.want)
				}
			}
			obj, err := objs.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if obj.ResourceVersion != tt.wantRV || string(obj.Value) != tt.wantValue || obj.Key != k {
				t.Fatalf("stored %+v, want rv %d value %q", obj, tt.wantRV, tt.wantValue)
			}
		})
	}
}

func TestPutSetsUpdatedAtOnlyWhenApplied(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("meta")
	k := Key{Type: "node", Namespace: "", Name: "n1"}
	before := time.Now()
	if _, err := objs.Put(ctx, Object{Key: k, ResourceVersion: 2, UpdatedAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	first, err := objs.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if first.UpdatedAt.Before(before) || first.UpdatedAt.After(time.Now()) {
		t.Fatalf("UpdatedAt = %v, want the store's write time, after %v", first.UpdatedAt, before)
	}
	if res, err := objs.Put(ctx, Object{Key: k, ResourceVersion: 1}); err != nil || res.Applied {
		t.Fatalf("stale put = %+v, %v", res, err)
	}
	second, _ := objs.Get(ctx, k)
	if !second.UpdatedAt.Equal(first.UpdatedAt) {
		t.Fatalf("stale put changed UpdatedAt from %v to %v", first.UpdatedAt, second.UpdatedAt)
	}
}

func TestPutBatchMixesAppliedAndStale(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("meta")
	a, b, c := Key{Type: "pod", Namespace: "ns", Name: "a"}, Key{Type: "pod", Namespace: "ns", Name: "b"}, Key{Type: "pod", Namespace: "ns", Name: "c"}
	if _, err := objs.PutBatch(ctx, []Object{{Key: a, ResourceVersion: 10}, {Key: b, ResourceVersion: 10}}); err != nil {
		t.Fatal(err)
	}
	got, err := objs.PutBatch(ctx, []Object{
		{Key: a, ResourceVersion: 11, Value: []byte("a11")}, // newer
		{Key: b, ResourceVersion: 9, Value: []byte("b9")},   // stale
		{Key: c, ResourceVersion: 1, Value: []byte("c1")},   // new key
		{Key: c, ResourceVersion: 1, Value: []byte("c1b")},  // equal to the batch's own earlier write
		{Key: b, ResourceVersion: 12, Value: []byte("b12")}, // newer after a stale one
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []PutResult{{Applied: true, Stored: 11}, {Applied: false, Stored: 10}, {Applied: true, Stored: 1}, {Applied: false, Stored: 1}, {Applied: true, Stored: 12}}
	if !slices.Equal(got, want) {
		t.Fatalf("PutBatch = %+v, want %+v", got, want)
	}
	list, err := objs.List(ctx, Query{})
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, o := range list {
		summary = append(summary, fmt.Sprintf("%s@%d=%s", o.Name, o.ResourceVersion, o.Value))
	}
	if got, want := strings.Join(summary, " "), "a@11=a11 b@12=b12 c@1=c1"; got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
}

func TestPutBatchIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("meta")
	_, err := objs.PutBatch(ctx, []Object{{Key: Key{Type: "pod", Namespace: "ns", Name: "ok"}}, {Key: Key{Type: "pod", Namespace: "ns", Name: ""}}})
	if !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("PutBatch with an invalid key = %v, want ErrInvalidKey", err)
	}
	// A failure inside the transaction: the context dies mid-batch.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := objs.PutBatch(cctx, []Object{{Key: Key{Type: "pod", Namespace: "ns", Name: "x"}}, {Key: Key{Type: "pod", Namespace: "ns", Name: "y"}}}); err == nil {
		t.Fatal("PutBatch with a cancelled context succeeded")
	}
	if list, err := objs.List(ctx, Query{}); err != nil || len(list) != 0 {
		t.Fatalf("after failed batches: %d objects, %v; want none", len(list), err)
	}
}

func TestPutBatchEmptyIsNoop(t *testing.T) {
	db, _ := openTest(t, Options{})
	if res, err := db.Objects("meta").PutBatch(context.Background(), nil); err != nil || len(res) != 0 {
		t.Fatalf("PutBatch(nil) = %v, %v", res, err)
	}
}

func TestScopesAreIsolated(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	meta, mod := db.Objects("meta"), db.Objects("devicetwin")
	k := Key{Type: "configmap", Namespace: "ns", Name: "same"}
	if _, err := meta.Put(ctx, Object{Key: k, ResourceVersion: 5, Value: []byte("meta")}); err != nil {
		t.Fatal(err)
	}
	if _, err := mod.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other scope Get = %v, want ErrNotFound", err)
	}
	// Same key, lower RV, other scope: applied, since RVs are compared within a scope only.
	if res, err := mod.Put(ctx, Object{Key: k, ResourceVersion: 1, Value: []byte("mod")}); err != nil || !res.Applied {
		t.Fatalf("Put in second scope = %+v, %v; want applied", res, err)
	}
	if existed, err := mod.Delete(ctx, k); err != nil || !existed {
		t.Fatalf("Delete in second scope = %v, %v", existed, err)
	}
	got, err := meta.Get(ctx, k)
	if err != nil || string(got.Value) != "meta" || got.ResourceVersion != 5 {
		t.Fatalf("meta scope after other scope's writes = %+v, %v", got, err)
	}
	if list, _ := mod.List(ctx, Query{}); len(list) != 0 {
		t.Fatalf("second scope lists %d objects, want 0", len(list))
	}
}

func TestListFiltersAndOrders(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("meta")
	keys := []Key{
		{Type: "pod", Namespace: "b", Name: "x"}, {Type: "pod", Namespace: "a", Name: "web-1"}, {Type: "pod", Namespace: "a", Name: "web-2"}, {Type: "pod", Namespace: "a", Name: "webby"},
		{Type: "pod", Namespace: "a", Name: "w%b"}, {Type: "pod", Namespace: "a", Name: "w_b"}, {Type: "pod", Namespace: "a", Name: "wxb"}, {Type: "pod", Namespace: "a", Name: "W%B"},
		{Type: "pod", Namespace: "a", Name: "100%"}, {Type: "pod", Namespace: "a", Name: "100x"}, {Type: "pod", Namespace: "a", Name: "1000"},
		{Type: "node", Namespace: "", Name: "n1"}, {Type: "node", Namespace: "", Name: "n%"}, {Type: "secret", Namespace: "a", Name: "web-1"},
		{Type: "pod", Namespace: "a", Name: "\xff\xffz"}, {Type: "pod", Namespace: "a", Name: "\xff\xff"},
	}
	for _, k := range keys {
		if _, err := objs.Put(ctx, Object{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Objects("other").Put(ctx, Object{Key: Key{Type: "pod", Namespace: "a", Name: "web-3"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"type", Query{Type: "node"}, []string{"node//n%", "node//n1"}},
		{"type and namespace", Query{Type: "pod", Namespace: "b"}, []string{"pod/b/x"}},
		{"namespace across types", Query{Namespace: "b"}, []string{"pod/b/x"}},
		{"prefix", Query{Type: "pod", NamePrefix: "web"}, []string{"pod/a/web-1", "pod/a/web-2", "pod/a/webby"}},
		{"prefix across types", Query{NamePrefix: "web-1"}, []string{"pod/a/web-1", "secret/a/web-1"}},
		{"percent is literal", Query{Type: "pod", NamePrefix: "w%"}, []string{"pod/a/w%b"}},
		{"underscore is literal", Query{Type: "pod", NamePrefix: "w_"}, []string{"pod/a/w_b"}},
		{"percent alone matches only percent", Query{NamePrefix: "%"}, nil},
		{"trailing percent", Query{Type: "pod", NamePrefix: "100%"}, []string{"pod/a/100%"}},
		{"prefix is case sensitive", Query{Type: "pod", NamePrefix: "W"}, []string{"pod/a/W%B"}},
		{"prefix of 0xff bytes", Query{Type: "pod", NamePrefix: "\xff\xff"}, []string{"pod/a/\xff\xff", "pod/a/\xff\xffz"}},
		{"no match", Query{Type: "service"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := objs.List(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range list {
				got = append(got, o.Type+"/"+o.Namespace+"/"+o.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("List(%+v) = %q, want %q", tt.q, got, tt.want)
			}
		})
	}
	t.Run("everything ordered by type, namespace, name", func(t *testing.T) {
		list, err := objs.List(ctx, Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(keys) {
			t.Fatalf("List(all) returned %d objects, want %d", len(list), len(keys))
		}
		if !slices.IsSortedFunc(list, func(a, b Object) int {
			return strings.Compare(a.Type+"\x00"+a.Namespace+"\x00"+a.Name, b.Type+"\x00"+b.Namespace+"\x00"+b.Name)
		}) {
			t.Fatalf("List(all) not ordered: %v", list)
		}
	})
}

func TestPrefixEndIsSmallestStringAfterPrefix(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"a", "b", true},
		{"ab", "ac", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"\xff", "", false},
		{"%", "&", true},
	}
	for _, tt := range tests {
		got, ok := prefixEnd(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestInvalidKeysRejected(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("meta")
	bad := []Key{{Type: "", Namespace: "ns", Name: "n"}, {Type: "pod", Namespace: "ns", Name: ""}, {}}
	for _, k := range bad {
		t.Run(fmt.Sprintf("%q", k.String()), func(t *testing.T) {
			_, putErr := objs.Put(ctx, Object{Key: k})
			_, batchErr := objs.PutBatch(ctx, []Object{{Key: k}})
			_, getErr := objs.Get(ctx, k)
			_, delErr := objs.Delete(ctx, k)
			for op, err := range map[string]error{"Put": putErr, "PutBatch": batchErr, "Get": getErr, "Delete": delErr} {
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("%s(%+v) = %v, want ErrInvalidKey", op, k, err)
					continue
				}
				if want := fmt.Sprintf("type=%q namespace=%q name=%q", k.Type, k.Namespace, k.Name); !strings.Contains(err.Error(), want) {
					t.Errorf("%s error %q does not name the key (%s)", op, err, want)
				}
			}
		})
	}
	t.Run("cluster-scoped key is valid", func(t *testing.T) {
		if _, err := objs.Put(ctx, Object{Key: Key{Type: "node", Namespace: "", Name: "n1"}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("resourceVersion above int64", func(t *testing.T) {
		_, err := objs.Put(ctx, Object{Key: Key{Type: "pod", Namespace: "ns", Name: "n"}, ResourceVersion: math.MaxInt64 + 1})
		if err == nil || !strings.Contains(err.Error(), "exceeds 2^63-1") {
			t.Fatalf("Put with huge RV = %v, want overflow error", err)
		}
		if _, err := objs.Put(ctx, Object{Key: Key{Type: "pod", Namespace: "ns", Name: "n"}, ResourceVersion: math.MaxInt64}); err != nil {
			t.Fatalf("Put with RV MaxInt64: %v", err)
		}
	})
}

func TestEmptyScopeViewFails(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("")
	k := Key{Type: "pod", Namespace: "ns", Name: "n"}
	_, putErr := objs.Put(ctx, Object{Key: k})
	_, batchErr := objs.PutBatch(ctx, []Object{{Key: k}})
	_, getErr := objs.Get(ctx, k)
	_, listErr := objs.List(ctx, Query{})
	_, delErr := objs.Delete(ctx, k)
	for op, err := range map[string]error{"Put": putErr, "PutBatch": batchErr, "Get": getErr, "List": listErr, "Delete": delErr} {
		if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), "empty scope") {
			t.Errorf("%s on empty scope = %v, want an empty-scope ErrInvalidKey", op, err)
		}
	}
}

func TestGetMissingIsNotFoundAndDeleteReportsExistence(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	objs := db.Objects("meta")
	k := Key{Type: "pod", Namespace: "ns", Name: "a"}
	if _, err := objs.Get(ctx, k); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "pod/ns/a") {
		t.Fatalf("Get missing = %v, want ErrNotFound naming the key", err)
	}
	if _, err := objs.Put(ctx, Object{Key: k, ResourceVersion: 1, Value: nil}); err != nil {
		t.Fatal(err)
	}
	if got, err := objs.Get(ctx, k); err != nil || len(got.Value) != 0 {
		t.Fatalf("Get with nil value = %+v, %v", got, err)
	}
	for i, want := range []bool{true, false} {
		if existed, err := objs.Delete(ctx, k); err != nil || existed != want {
			t.Fatalf("Delete #%d = %v, %v; want existed=%v", i+1, existed, err, want)
		}
	}
	if _, err := objs.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	// After a delete the key starts over: an older RV is accepted again.
	if res, err := objs.Put(ctx, Object{Key: k, ResourceVersion: 1}); err != nil || !res.Applied {
		t.Fatalf("Put after Delete = %+v, %v", res, err)
	}
}

// Readers must never see a torn or regressing object while one writer advances it.
func TestConcurrentReadersNeverSeeTornOrOlderObjects(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{Synchronous: "normal"}) // the race detector is slow enough; fsync adds nothing here
	objs := db.Objects("meta")
	const writes, keys, readers = 1000, 5, 4
	key := func(i int) Key { return Key{Type: "pod", Namespace: "ns", Name: fmt.Sprint("p", i%keys)} }

	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, readers+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := range writes {
			rv := uint64(i + 1)
			if _, err := objs.Put(ctx, Object{Key: key(i), ResourceVersion: rv, Value: fmt.Appendf(nil, "v%d", rv)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[Key]uint64{}
			for n := 0; ; n++ {
				select {
				case <-done:
					if n > 0 {
						return
					}
				default:
				}
				list, err := objs.List(ctx, Query{Type: "pod", Namespace: "ns"})
				if err != nil {
					errs <- err
					return
				}
				for _, o := range list {
					if string(o.Value) != fmt.Sprintf("v%d", o.ResourceVersion) {
						errs <- fmt.Errorf("torn object %s: rv %d value %q", o.Key, o.ResourceVersion, o.Value)
						return
					}
					if o.ResourceVersion < last[o.Key] {
						errs <- fmt.Errorf("%s went back from rv %d to %d", o.Key, last[o.Key], o.ResourceVersion)
						return
					}
					last[o.Key] = o.ResourceVersion
				}
				if o, err := objs.Get(ctx, key(n)); err == nil && o.ResourceVersion < last[o.Key] {
					errs <- fmt.Errorf("Get %s went back from rv %d to %d", o.Key, last[o.Key], o.ResourceVersion)
					return
				} else if err != nil && !errors.Is(err, ErrNotFound) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := writes - keys; i < writes; i++ {
		if o, err := objs.Get(ctx, key(i)); err != nil || o.ResourceVersion != uint64(i+1) {
			t.Errorf("final %s = %+v, %v; want rv %d", key(i), o, err, i+1)
		}
	}
}
