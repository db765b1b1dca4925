package metamanager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager/metaserver"
	"github.com/kedge-io/kedge/sdk"
)

// benchServer is a MetaServer over a real SQLite store holding 100 pods, each with its Secret and
// token; insecure serves without authentication (the comparison).
func benchServer(b *testing.B, insecure bool) (srv *metaserver.Server, admin string) {
	b.Helper()
	db, err := store.Open(filepath.Join(b.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	objs := db.Objects(Name)
	ctx := context.Background()
	var batch []sdk.Object
	put := func(typ, ns, name string, rv uint64, v any) {
		raw, _ := json.Marshal(v)
		batch = append(batch, sdk.Object{Key: sdk.Key{Type: typ, Namespace: ns, Name: name}, ResourceVersion: rv, Value: raw})
	}
	for i := range 100 {
		name := fmt.Sprintf("pod-%03d", i)
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
			Spec: corev1.PodSpec{NodeName: "edge-1", Containers: []corev1.Container{{Name: "c", Image: "nginx",
				EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-secret"}}}}}}}}
		put("pod", "default", name, uint64(10+i), p)
		put("secret", "default", name+"-secret", uint64(1000+i), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-secret", Namespace: "default"},
			Data: map[string][]byte{"password": []byte("value")}})
		put(metaserver.TokenType, "default", name, uint64(2000+i), podTokens("default", name, "uid-"+name, "", tok("token-of-"+name, time.Hour, "")))
	}
	if _, err := objs.PutBatch(ctx, batch); err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	opts := metaserver.Options{Address: "127.0.0.1:0", Store: objs, Insecure: insecure, Logger: quiet}
	if !insecure {
		admin, err = metaserver.AdminToken(filepath.Join(b.TempDir(), "admin.token"), quiet)
		if err != nil {
			b.Fatal(err)
		}
		opts.Auth = metaserver.NewAuthenticator(admin)
	}
	srv, err = metaserver.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Load(ctx); err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { srv.Run(sctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return srv, admin
}

// benchCases are the requests both benchmarks make.
var benchCases = []struct {
	name     string
	insecure bool
	token    func(admin string) string
	path     string
	want     int
}{
	{"secret/no-auth", true, func(string) string { return "" }, "/api/v1/namespaces/default/secrets/pod-042-secret", 200},
	{"secret/admin-token", false, func(a string) string { return a }, "/api/v1/namespaces/default/secrets/pod-042-secret", 200},
	{"secret/pod-token", false, func(string) string { return "token-of-pod-042" }, "/api/v1/namespaces/default/secrets/pod-042-secret", 200},
	{"secret-list-100/no-auth", true, func(string) string { return "" }, "/api/v1/namespaces/default/secrets", 200},
	{"secret-list-100/admin-token", false, func(a string) string { return a }, "/api/v1/namespaces/default/secrets", 200},
	{"secret-list-100/pod-token", false, func(string) string { return "token-of-pod-042" }, "/api/v1/namespaces/default/secrets", 200},
	{"refused/no-token", false, func(string) string { return "" }, "/api/v1/namespaces/default/secrets/pod-042-secret", 401},
}

// BenchmarkMetaServerHandler is the server's own cost of a request (ServeHTTP called directly, no
// network): what authentication adds without the loopback round trip's noise.
func BenchmarkMetaServerHandler(b *testing.B) {
	for _, tc := range benchCases {
		b.Run(tc.name, func(b *testing.B) {
			srv, admin := benchServer(b, tc.insecure)
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tok := tc.token(admin); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			b.ResetTimer()
			for b.Loop() {
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, req)
				if rec.Code != tc.want {
					b.Fatalf("%s: %d, want %d", tc.path, rec.Code, tc.want)
				}
			}
		})
	}
}

// BenchmarkMetaServerGet is one request over keep-alive HTTP on loopback: a Secret and a list of
// 100 Secrets, without authentication, with the node-admin token, and with a pod's service-account
// token (token lookup, the pod read and decoded from SQLite, the grant checked); and a refusal.
func BenchmarkMetaServerGet(b *testing.B) {
	for _, tc := range benchCases {
		b.Run(tc.name, func(b *testing.B) {
			srv, admin := benchServer(b, tc.insecure)
			req, _ := http.NewRequest(http.MethodGet, "http://"+srv.Addr()+tc.path, nil)
			if tok := tc.token(admin); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			b.ResetTimer()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					b.Fatalf("%s: %d, want %d", tc.path, resp.StatusCode, tc.want)
				}
			}
		})
	}
}
