package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	hostdaemon "github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/plugin-registry/registry"
	"github.com/kedge-io/kedge/plugin-registry/server"
	"github.com/kedge-io/kedge/sdk"
)

// rolloutCloud is the cloud side as one edge sees it: a hub endpoint (the real hub protocol over
// mutual TLS: it acknowledges upstream messages and sends downstream ones) and the plugin registry
// under /registry/, both on one HTTPS server that requires the node's certificate, as cloudcore's.
type rolloutCloud struct {
	addr                  string
	caFile, cert, keyFile string
	conns                 chan *hub.Conn
	reports               chan map[string]any
}

func startRolloutCloud(t *testing.T, node, regDir string) *rolloutCloud {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rollout CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, subj pkix.Name, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: subj, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := &rolloutCloud{conns: make(chan *hub.Conn, 4), reports: make(chan map[string]any, 64)}
	c.caFile = write("ca.crt", "CERTIFICATE", caDER)
	nodeDER, nodeKey := issue(2, pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}, x509.ExtKeyUsageClientAuth)
	c.cert = write("node.crt", "CERTIFICATE", nodeDER)
	kb, _ := x509.MarshalECPrivateKey(nodeKey)
	c.keyFile = write("node.key", "EC PRIVATE KEY", kb)
	srvDER, srvKey := issue(3, pkix.Name{CommonName: "cloudcore"}, x509.ExtKeyUsageServerAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	mux := http.NewServeMux()
	mux.Handle("/registry/", http.StripPrefix("/registry", server.Handler(regDir, nil)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		conn, err := hub.Accept(w, r, hub.AcceptOptions{})
		if err != nil {
			t.Logf("hub accept: %v", err)
			return
		}
		c.conns <- conn
		for {
			msg, err := conn.Receive(context.Background())
			if err != nil {
				return
			}
			if msg.IsReply() {
				continue // the edge's acknowledgement of a downstream message
			}
			if msg.Route.Group == "plugin" && strings.Contains(msg.Route.Resource, "/pluginstatus/") { // not the node's inventory (kedge/nodeinventory/<node>)
				rep := map[string]any{}
				if err := msg.DecodeContent(&rep); err != nil {
					t.Errorf("pluginstatus report content: %v", err)
				}
				rep["resource"] = msg.Route.Resource
				c.reports <- rep
			}
			ack, _ := msg.Reply("cloudhub", "OK")
			_ = conn.Send(context.Background(), ack)
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c.addr = srv.Listener.Addr().String()
	return c
}

// report waits for the next pluginstatus report from the edge.
func (c *rolloutCloud) report(t *testing.T) map[string]any {
	t.Helper()
	select {
	case r := <-c.reports:
		return r
	case <-time.After(25 * time.Second):
		t.Fatal("no pluginstatus report from the edge within 25s")
	}
	return nil
}

// The real edgecore gets PluginRollouts from its cloud link (stored by metamanager, handed to
// pluginmanager), installs a real plugin executable from a signed registry over mutual TLS, swaps
// nodestatus to it through its own control socket, refuses a tampered artifact, rolls a broken
// version back, and reports every step upstream in order.
func TestEdgecoreRollsPluginsOutFromTheRegistryAndRollsABrokenOneBack(t *testing.T) {
	needBinaries(t)
	const node = "edge-roll"
	dir := t.TempDir()
	v1 := filepath.Join(dir, "nodestatus-v1")
	goBuild(t, nil, "-tags", "kedge_custom kedge_nodestatus", "-ldflags", "-X main.moduleName=nodestatus", "-o", v1, "github.com/kedge-io/kedge/cmd/kedge-module")
	body, err := os.ReadFile(v1)
	if err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(dir, "nodestatus-v2") // the same program, another file (bytes after the ELF image)
	v3 := filepath.Join(dir, "nodestatus-v3") // broken: exits at start
	tampered := filepath.Join(dir, "nodestatus-v4")
	for path, b := range map[string][]byte{v2: append(body, []byte("\nkedge plugin v2\n")...), v3: []byte("#!/bin/sh\nexit 3\n"), tampered: []byte("#!/bin/sh\nexit 0\n")} {
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	regDir, keys := filepath.Join(dir, "registry"), filepath.Join(dir, "keys")
	if _, err := index.WriteKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	key, err := index.ReadPrivateKey(filepath.Join(keys, index.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	shas := map[string]string{}
	for version, path := range map[string]string{"1.0.0": v1, "2.0.0": v2, "3.0.0": v3, "4.0.0": tampered} {
		p, err := registry.Publish(regDir, registry.PublishRequest{Name: "nodestatus", Version: version, Kind: "module", API: sdk.APIVersion,
			Runtime: index.RuntimeProcess, OS: runtime.GOOS, Arch: runtime.GOARCH, Path: path})
		if err != nil {
			t.Fatal(err)
		}
		shas[version] = p.Artifacts[0].SHA256
	}
	if _, err := registry.Sign(regDir, key, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	// 4.0.0's artifact is altered on the server after signing.
	if err := os.WriteFile(filepath.Join(regDir, registry.ArtifactsDir, shas["4.0.0"]), []byte("#!/bin/sh\nexit 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	cloud := startRolloutCloud(t, node, regDir)
	socket := filepath.Join(dir, "edgecore.sock")
	pluginsDir := filepath.Join(dir, "plugins")
	cfg := filepath.Join(dir, "edgecore.yaml")
	conf := fmt.Sprintf(`node:
  name: %s
modules:
  nodestatus:
    interval: 1s
  edgehub:
    enable: true
    server: %s
    caFile: %s
    certFile: %s
    keyFile: %s
    sendInventory: false
    backoffMin: 100ms
    backoffMax: 1s
  pluginmanager:
    enable: true
    registryURL: https://%s/registry
    caFile: %s
    certFile: %s
    keyFile: %s
    trustedKeys: [%s]
    pluginsDir: %s
    healthTimeout: 20s
    healthStable: 2s
`, node, cloud.addr, cloud.caFile, cloud.cert, cloud.keyFile, cloud.addr, cloud.caFile, cloud.cert, cloud.keyFile,
		filepath.Join(keys, index.PublicKeyFile), pluginsDir) // no controlSocket: pluginmanager lists and swaps through its host handle
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d := start(t, "edgecore", []string{"KEDGE_ADMIN__SOCKET=" + socket}, "--config", cfg)
	d.socket = socket
	d.waitReady()
	var conn *hub.Conn
	select {
	case conn = <-cloud.conns:
	case <-time.After(60 * time.Second):
		t.Fatalf("edgehub did not connect\n%s", d.stderr)
	}

	rv := 100
	roll := func(gen int, version string) []map[string]any {
		t.Helper()
		rv++
		msg, err := message.New("edgecontroller", "resource", message.OpUpdate, "default/pluginrollout/nodestatus-roll").WithContent(map[string]any{
			"rollout": "default/nodestatus-roll", "generation": gen, "plugin": "nodestatus", "version": version, "runtime": "process", "module": "nodestatus"})
		if err != nil {
			t.Fatal(err)
		}
		msg.Header.ResourceVersion = fmt.Sprint(rv)
		if err := conn.Send(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		for {
			r := cloud.report(t)
			if r["resource"] != "default/pluginstatus/nodestatus-roll" || r["rollout"] != "default/nodestatus-roll" || r["generation"] != float64(gen) || r["version"] != version {
				t.Fatalf("report %v does not belong to generation %d of %s", r, gen, version)
			}
			out = append(out, r)
			if r["state"] != "Installing" {
				return out
			}
		}
	}
	states := func(rs []map[string]any) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprint(r["state"]))
		}
		return strings.Join(s, ",")
	}
	installed := func(version string) string { return filepath.Join(pluginsDir, "nodestatus", version, "nodestatus") }
	// nodestatus returns module nodestatus as edgecore's control socket reports it (module ls shows
	// no file paths).
	nodestatus := func() (modules.Status, error) {
		all, err := hostdaemon.NewControlClient(socket, 10*time.Second).Modules(context.Background())
		if err != nil {
			return modules.Status{}, err
		}
		for _, st := range all {
			if st.Name == "nodestatus" {
				return st, nil
			}
		}
		return modules.Status{}, fmt.Errorf("module nodestatus is not running: %v", all)
	}

	steps := []struct {
		name, version, want string
		gen                 int
		runs                string // the version whose file runs afterwards
	}{
		{"v1 is installed and swapped in", "1.0.0", "Installing,Updated", 1, "1.0.0"},
		{"v2 replaces v1", "2.0.0", "Installing,Updated", 2, "2.0.0"},
		{"the same generation delivered again is not reinstalled", "2.0.0", "Updated", 2, "2.0.0"},
		{"a tampered artifact is refused and nothing is installed", "4.0.0", "Installing,Failed", 3, "2.0.0"},
		{"a broken v3 is rolled back to v2", "3.0.0", "Installing,RolledBack", 4, "2.0.0"},
	}
	for _, s := range steps {
		reps := roll(s.gen, s.version)
		if got := states(reps); got != s.want {
			t.Fatalf("%s: reports %s, want %s: %v\n%s", s.name, got, s.want, reps, d.stderr)
		}
		out := d.moduleLs("nodestatus", "process", "sha256:"+shas[s.runs][:12])
		if strings.Contains(out, "unhealthy") {
			t.Fatalf("%s: module ls shows an unhealthy module:\n%s", s.name, out)
		}
		if st, err := nodestatus(); err != nil || st.Runtime != modules.Process || st.Path != installed(s.runs) {
			t.Fatalf("%s: nodestatus runs %+v (%v), want process %s", s.name, st, err, installed(s.runs))
		}
	}
	if _, err := os.Stat(installed("4.0.0")); !os.IsNotExist(err) {
		t.Fatalf("the tampered artifact was installed: %v", err)
	}
	if len(pluginsAlive(installed("2.0.0"))) != 1 {
		t.Fatalf("want one v2 plugin process, got %v", pluginsAlive(installed("2.0.0")))
	}

	// Item 4: edgecore restarts (a reboot while offline: the config still says builtin); pluginmanager
	// swaps the last good v2 back in.
	if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	offline := strings.Replace(conf, "server: "+cloud.addr, "server: 127.0.0.1:1", 1)
	if err := os.WriteFile(cfg, []byte(offline), 0o600); err != nil {
		t.Fatal(err)
	}
	d = start(t, "edgecore", []string{"KEDGE_ADMIN__SOCKET=" + socket}, "--config", cfg)
	d.socket = socket
	d.waitReadyOffline() // offline (edgehub healthy, its link down: /readyz/cloud says so)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := nodestatus()
		if err == nil && st.Runtime == modules.Process && st.Path == installed("2.0.0") && st.Health == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart nodestatus does not run the last good v2: %+v (%v)\n%s", st, err, d.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.moduleLs("nodestatus", "process", "sha256:"+shas["2.0.0"][:12])
	if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
