package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/host/pki"
)

// testCloud is a CA and the records its certificate server checks join tokens against.
type testCloud struct {
	ca   *pki.CA
	recs pki.Records
}

// startCertServer runs a real cloudcore certificate server on 127.0.0.1 and returns its CA and
// records, and its port.
func startCertServer(t *testing.T) (*testCloud, int) {
	t.Helper()
	ctx := context.Background()
	st := pki.FileStorage{Dir: t.TempDir()}
	ca, _, err := pki.LoadOrCreateCA(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := pki.NewServerCert(ctx, ca, st, pki.ServerCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs := pki.FileRecords{Dir: st.Dir}
	h, err := pki.NewCertServer(pki.CertServerOptions{CA: ca, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(tls.NewListener(ln, pki.CertServerTLSConfig(serving))) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &testCloud{ca, recs}, ln.Addr().(*net.TCPAddr).Port
}

// newJoinToken makes a single-use join token of c.
func newJoinToken(t *testing.T, c *testCloud) string {
	t.Helper()
	tok, _, err := pki.CreateToken(context.Background(), c.ca, c.recs, pki.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// runEdgecore executes edgecore in-process with a fresh join command (cobra keeps flag values
// between runs of the same command object).
func runEdgecore(t *testing.T, args ...string) (string, error) {
	t.Helper()
	s := spec
	s.Commands = []*cobra.Command{joinCommand()}
	cmd := daemon.Command(s)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestJoinGetsACertificateAndWritesEdgecoreYAML(t *testing.T) {
	ca, port := startCertServer(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	configOut := filepath.Join(t.TempDir(), "etc", "edgecore.yaml")
	args := []string{"join", "--cloudcore-address", "127.0.0.1", "--cert-port", strconv.Itoa(port), "--hub-port", "10000",
		"--token", newJoinToken(t, ca), "--node-name", "edge-1", "--data-dir", dataDir, "--config-out", configOut}
	out, err := runEdgecore(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	certs := filepath.Join(dataDir, "certs")
	for _, step := range []string{
		"fetched CA from https://127.0.0.1:" + strconv.Itoa(port) + "/ca.crt",
		"CA hash matches token",
		"certificate issued for system:node:edge-1, valid until ",
		"wrote " + filepath.Join(certs, "ca.crt"),
		"wrote " + filepath.Join(certs, "node.crt"),
		"wrote " + filepath.Join(certs, "node.key"),
		"wrote " + configOut,
	} {
		if !strings.Contains(out, step) {
			t.Errorf("output lacks %q:\n%s", step, out)
		}
	}
	got, err := os.ReadFile(configOut)
	if err != nil {
		t.Fatal(err)
	}
	want := `node:
  name: edge-1
store:
  path: ` + dataDir + `/edgecore.db
modules:
  edgehub:
    enable: true
    server: 127.0.0.1:10000
    certServer: 127.0.0.1:` + strconv.Itoa(port) + `
    caFile: ` + certs + `/ca.crt
    certFile: ` + certs + `/node.crt
    keyFile: ` + certs + `/node.key
  edged:
    enable: true
    criEndpoint: unix:///run/containerd/containerd.sock
    rootDir: ` + dataDir + `/edged
  metamanager:
    metaServer:
      certFile: ` + dataDir + `/metaserver.crt
      keyFile: ` + dataDir + `/metaserver.key
      adminTokenFile: ` + dataDir + `/metaserver-admin.token
  nodestatus:
    criEndpoint: unix:///run/containerd/containerd.sock
    storagePath: ` + dataDir + `
  dmi:
    socket: ` + dataDir + `/dmi.sock
`
	if string(got) != want {
		t.Errorf("edgecore.yaml:\n%s\nwant:\n%s", got, want)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(certs, "node.crt"), filepath.Join(certs, "node.key")); err != nil {
		t.Errorf("stored key pair: %v", err)
	}

	// The config exists now: refused without --force, nothing touched; replaced with it.
	before, _ := os.ReadFile(filepath.Join(certs, "node.crt"))
	if _, err := runEdgecore(t, args...); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second join without --force: err = %v; want a refusal naming --force", err)
	}
	if after, _ := os.ReadFile(filepath.Join(certs, "node.crt")); !bytes.Equal(before, after) {
		t.Error("a refused join replaced the certificate")
	}
	// Joining edge-1 again needs a token made to replace it: a fresh ordinary one is refused (409),
	// the node holding a valid certificate.
	withToken := func(tok string) []string {
		a := append([]string{}, args...)
		for i := range a {
			if a[i] == "--token" {
				a[i+1] = tok
			}
		}
		return append(a, "--force")
	}
	if _, err := runEdgecore(t, withToken(newJoinToken(t, ca))...); err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "--replace") {
		t.Errorf("join --force for a node holding a certificate: err = %v; want 409 naming --replace", err)
	}
	tok, _, err := pki.CreateToken(context.Background(), ca.ca, ca.recs, pki.TokenOptions{Node: "edge-1", Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runEdgecore(t, withToken(tok.String())...); err != nil {
		t.Errorf("join --force with a replacing token: %v\n%s", err, out)
	}
}

func TestJoinExitsWithCode2AndOneLineOnBadInput(t *testing.T) {
	ca, port := startCertServer(t)
	other, _ := startCertServer(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.yaml")
	if err := os.WriteFile(existing, []byte("node: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := func(tok string, port int, extra ...string) []string {
		return append([]string{"join", "--cloudcore-address", "127.0.0.1", "--cert-port", strconv.Itoa(port), "--token", tok,
			"--node-name", "edge-1", "--data-dir", filepath.Join(dir, "data"), "--config-out", filepath.Join(dir, "edgecore.yaml")}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad token format", base("not-a-token", port), "dot-separated parts"},
		{"CA hash mismatch", base(newJoinToken(t, other), port), "CA hash mismatch"},
		{"unreachable server", base(newJoinToken(t, ca), deadPort), "is cloudcore running there"},
		{"address with a port", base(newJoinToken(t, ca), port, "--cloudcore-address", "127.0.0.1:10002"), "--cert-port"},
		{"invalid node name", base(newJoinToken(t, ca), port, "--node-name", "Edge_1"), "DNS-1123"},
		{"port out of range", base(newJoinToken(t, ca), port, "--hub-port", "70000"), "--hub-port 70000"},
		{"existing config", base(newJoinToken(t, ca), port, "--config-out", existing), "pass --force"},
		{"stream port out of range", base(newJoinToken(t, ca), port, "--stream-port", "70000"), "--stream-port 70000"},
		{"stream port on a node without a runtime", base(newJoinToken(t, ca), port, "--stream-port", "10004", "--no-runtime"), "--no-runtime node has none"},
		{"missing registry key", base(newJoinToken(t, ca), port, "--registry-key", filepath.Join(dir, "nope.pub")), "--registry-key " + filepath.Join(dir, "nope.pub")},
		{"missing token", []string{"join", "--cloudcore-address", "127.0.0.1"}, `"token" not set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runEdgecore(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v; want one line mentioning %q", err, tt.want)
			}
			s := spec
			s.Commands = []*cobra.Command{joinCommand()}
			if code := daemon.Main(s, tt.args); code != daemon.ExitConfig {
				t.Errorf("exit code %d; want %d", code, daemon.ExitConfig)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "edgecore.yaml")); err == nil {
		t.Error("a failed join wrote edgecore.yaml")
	}
}

func TestJoinHelpHasExamples(t *testing.T) {
	out, err := runEdgecore(t, "join", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Examples:", "--cloudcore-address", "--token", "--node-name", "--data-dir", "--config-out", "--cert-port", "--hub-port", "--force"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// Every kind of node gets a config edgecore accepts as it is written: with edged on the runtime, or
// with --no-runtime, noruntime answering for the pods; with the stream tunnel and the plugin registry
// pointing at cloudcore with the node's certificate.
func TestJoinedConfigIsValidWithAndWithoutAContainerRuntime(t *testing.T) {
	ca, port := startCertServer(t)
	keyFile := filepath.Join(t.TempDir(), "registry.pub")
	if err := os.WriteFile(keyFile, []byte("not checked by join; pluginmanager parses it at start\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	i := 0
	for _, tc := range []struct {
		name  string
		extra []string
		want  []string
	}{
		{"edged on the runtime", nil, []string{"edged:\n    enable: true", "criEndpoint: unix:///run/containerd/containerd.sock",
			"metaServer:\n      certFile: ", "/data/metaserver.crt\n", "/data/metaserver.key\n", "/data/metaserver-admin.token\n"}},
		{"no runtime", []string{"--no-runtime"}, []string{"noruntime:\n    enable: true", "consumers:\n      pod: noruntime", "edged:\n    enable: false"}},
		{"stream tunnel", []string{"--stream-port", "10004"}, []string{"edgestream:\n    enable: true\n    server: 127.0.0.1:10004\n    caFile: ", "/certs/node.key\n    criEndpoint: unix:///run/containerd/containerd.sock"}},
		{"plugin registry", []string{"--registry-key", keyFile}, []string{"pluginmanager:\n    enable: true\n    registryURL: https://127.0.0.1:" + strconv.Itoa(port) + "/registry\n", "trustedKeys:\n      - " + keyFile + "\n", "/data/plugins\n"}},
	} {
		i++ // a node name per case: a name that holds a certificate cannot join again
		node := "edge-" + strconv.Itoa(i)
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			configOut := filepath.Join(t.TempDir(), "edgecore.yaml")
			args := append([]string{"join", "--cloudcore-address", "127.0.0.1", "--cert-port", strconv.Itoa(port), "--hub-port", "10000",
				"--token", newJoinToken(t, ca), "--node-name", node, "--data-dir", dataDir, "--config-out", configOut}, tc.extra...)
			if out, err := runEdgecore(t, args...); err != nil {
				t.Fatalf("join: %v\n%s", err, out)
			}
			got, _ := os.ReadFile(configOut)
			for _, w := range tc.want {
				if !strings.Contains(string(got), w) {
					t.Errorf("edgecore.yaml lacks %q:\n%s", w, got)
				}
			}
			if out, err := runEdgecore(t, "validate", "--config", configOut); err != nil {
				t.Fatalf("edgecore validate refuses the joined config: %v\n%s", err, out)
			}
		})
	}
}
