package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	hostdaemon "github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/plugin-registry/registry"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// The acceptance of plugin rollouts (issue 9) through the real cloudcore: a real kube-apiserver with
// build/crds, cloudcore with cloudhub serving a signed plugin registry (registryDir), edgecontroller,
// devicecontroller and rolloutcontroller, and two joined edgecores labelled class=gateway. Each edge
// polls its own T-100 thermometer (every 100 ms, as modbus_swap_test.go) with the modbus mapper, and
// the mapper is the plugin rolled out: cmd/kedge-module built with the modbus module twice (as `make
// module-modbus` does, -X main.version=1.0.0 and 2.0.0), published as plugin modbus (kind mapper,
// runtime process); the gateways start with v1 as a process plugin and a PluginRollout of v2
// (maxParallel 1) is applied with kubectl. Both nodes report Updated one after the other, `kubectl get
// pluginrollouts` shows DESIRED 2 UPDATED 2 PHASE Complete, `edgecore module ls` shows v2's sha256, and
// every count each device served reached its twin once, in order (the mapper's handover: the old
// instance finishes and reports its reads in hand before the new one polls). Then a broken v3 (an
// executable that exits at start): the first node reports RolledBack and keeps polling with v2, the
// rollout is Paused and the second node is never sent it. Then bad input, each refused on the first
// node with the reason in the rollout's status and nothing installed or swapped there.
func TestPluginRolloutThroughCloudcoreUpdatesGatewaysOneAtATimeAndPausesOnABrokenVersion(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
	builds := make(chan mapperBuilds, 1)
	go func() { builds <- buildModbusMapper(t.TempDir()) }() // meanwhile the cluster starts

	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	reg := newRolloutRegistry(t, filepath.Join(dir, "registry"), filepath.Join(dir, "keys"))
	cloud := &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		cloudEnv: []string{
			"KEDGE_MODULES__CLOUDHUB__REGISTRYDIR=" + reg.dir,
			"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true",
			"KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__ENABLE=true",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
		}}
	cloud.startCloud()
	// One token for the two gateways: a token allows one join unless --uses says more.
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", cloud.pkiDir, "--uses", "2")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	sockDir, err := os.MkdirTemp("", "kr") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	mb := <-builds
	if mb.err != nil {
		t.Fatal(mb.err)
	}
	edges := []*rolloutEdge{
		startRolloutEdge(t, cloud, "gw-a", strings.TrimSpace(token), sockDir, reg.pubFile, mb.v1, mb.v1sum),
		startRolloutEdge(t, cloud, "gw-b", strings.TrimSpace(token), sockDir, reg.pubFile, mb.v1, mb.v1sum),
	}
	first, second := edges[0], edges[1]
	for _, e := range edges {
		waitFor(t, e.node+" Ready", 60*time.Second, e.c.nodeReady)
		waitFor(t, e.node+": the modbus mapper registered with edgecore's DMI", 60*time.Second, func() (bool, string) {
			v := e.d.metric("kedge_dmi_mappers")
			return v >= 1, fmt.Sprint(v)
		})
		cloud.kubectl("label", "node", e.node, "class=gateway")
		e.c.kubectl("create", "namespace", e.ns)
		applyT100Examples(t, e.c, e.ns, e.dev.Addr())
	}
	for _, e := range edges {
		e.atLeast(t, 10, "mapper v1 (process)")
		if st := e.module(t, "modbus"); st.Runtime != modules.Process || st.Path != mb.v1 || st.Health != "" {
			t.Fatalf("%s: modbus runs %+v before any rollout, want healthy process %s", e.node, st, mb.v1)
		}
	}

	reg.publish(t, "modbus", "mapper", "1.0.0", index.RuntimeProcess, mb.v1)
	reg.publish(t, "modbus", "mapper", "2.0.0", index.RuntimeProcess, mb.v2)
	caps := filepath.Join(dir, "thermo-codec-greedy.wasm")
	packWASMStub(t, caps, "1.0.0")
	reg.publish(t, "thermo-codec", "module", "1.0.0", index.RuntimeWASM, caps)
	reg.sign(t, reg.key, time.Now())
	oldIndex, err := os.ReadFile(filepath.Join(reg.dir, registry.SignedFile))
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "modbus-v3")
	tampered := filepath.Join(dir, "modbus-v4")
	for path, body := range map[string]string{broken: "#!/bin/sh\necho broken mapper >&2\nexit 3\n", tampered: "#!/bin/sh\nexit 0\n"} {
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	reg.publish(t, "modbus", "mapper", "3.0.0", index.RuntimeProcess, broken)
	tamperedSum := reg.publish(t, "modbus", "mapper", "4.0.0", index.RuntimeProcess, tampered)
	reg.sign(t, reg.key, time.Now())

	const rns = "default"
	v2Path := func(e *rolloutEdge) string { return filepath.Join(e.pluginsDir, "modbus", "2.0.0", "modbus") }
	runsV2 := func(t *testing.T, e *rolloutEdge) {
		t.Helper()
		if st := e.module(t, "modbus"); st.Runtime != modules.Process || st.Path != v2Path(e) || st.Health != "" {
			t.Fatalf("%s: modbus runs %+v, want healthy process %s", e.node, st, v2Path(e))
		}
	}

	t.Run("a rollout of mapper v2 updates both gateways one at a time and loses no reading", func(t *testing.T) {
		counts := map[*rolloutEdge]int{}
		for _, e := range edges {
			counts[e] = len(e.readings(t))
		}
		applyRollout(t, cloud, rns, "mapper", "modbus", "2.0.0", index.RuntimeProcess, "modbus", nil)
		r := waitRollout(t, cloud, rns, "mapper", "Complete with both nodes Updated", func(r *v1alpha1.PluginRollout) bool {
			return r.Status.Phase == "Complete" && r.Status.Updated == 2
		})
		for _, n := range r.Status.Nodes {
			if n.State != "Updated" || n.Version != "2.0.0" || n.UpdatedAt == nil {
				t.Fatalf("node entry %+v, want Updated at 2.0.0", n)
			}
		}
		a, b := nodeStatus(r, first.node), nodeStatus(r, second.node)
		if b.UpdatedAt.Before(a.UpdatedAt) {
			t.Fatalf("%s was updated (%s) before %s (%s): maxParallel 1 goes in name order", second.node, b.UpdatedAt, first.node, a.UpdatedAt)
		}
		out, err := k8s.Kubectl("get", "pluginrollouts", "-n", rns, "mapper")
		if err != nil {
			t.Fatalf("kubectl get pluginrollouts: %v\n%s", err, out)
		}
		if !strings.Contains(out, "DESIRED") || !strings.Contains(out, "UPDATED") || !strings.Contains(out, "PHASE") {
			t.Fatalf("kubectl get pluginrollouts lacks its printer columns:\n%s", out)
		}
		row := strings.Fields(lastLine(out))
		if len(row) < 5 || row[0] != "mapper" || row[1] != "2" || row[2] != "2" || row[3] != "0" || row[4] != "Complete" {
			t.Fatalf("kubectl get pluginrollouts row %v, want mapper DESIRED 2 UPDATED 2 FAILED 0 PHASE Complete", row)
		}
		for _, e := range edges {
			runsV2(t, e)
			if out := e.d.moduleLs(); !moduleRow(out, "modbus", "process", "sha256:"+mb.v2sum[:12]) {
				t.Fatalf("%s: edgecore module ls does not show modbus as process v2 (sha256:%s):\n%s", e.node, mb.v2sum[:12], out)
			}
			e.atLeast(t, counts[e]+10, "after the rollout of v2")
			e.checkEveryReadingOnce(t)
		}
	})

	t.Run("a broken v3 is rolled back on the first node, the rollout pauses, the second node is never sent it", func(t *testing.T) {
		applyRollout(t, cloud, rns, "mapper", "modbus", "3.0.0", index.RuntimeProcess, "modbus", nil)
		r := waitRollout(t, cloud, rns, "mapper", "Paused on the first node", func(r *v1alpha1.PluginRollout) bool {
			return r.Status.Phase == "Paused" && nodeStatus(r, first.node).State == "RolledBack"
		})
		a, b := nodeStatus(r, first.node), nodeStatus(r, second.node)
		if !strings.Contains(a.Message, "rolled back") || !strings.Contains(r.Status.Message, first.node) {
			t.Fatalf("status message %q, node %+v: want the node's RolledBack reason", r.Status.Message, a)
		}
		if b.State != "Pending" {
			t.Fatalf("%s is %+v in a paused rollout, want Pending", second.node, b)
		}
		runsV2(t, first)
		runsV2(t, second)
		n := len(first.readings(t))
		first.atLeast(t, n+10, "after the rollback")
		first.checkEveryReadingOnce(t)
	})

	t.Run("bad input is refused on the first node, shown on the rollout, and nothing is installed", func(t *testing.T) {
		resign := func(t *testing.T) { reg.sign(t, reg.key, time.Now()) }
		tests := []struct {
			name, rollout, plugin, module, version, runtime string
			granted                                         []string
			prepare, undo                                   func(t *testing.T)
			want                                            string
		}{
			{name: "a WASM plugin asking for capabilities the rollout does not grant", rollout: "bad-caps", plugin: "thermo-codec", module: "thermo-codec",
				version: "1.0.0", runtime: index.RuntimeWASM, granted: []string{"log"}, want: "send.resources:*"},
			{name: "a tampered artifact", rollout: "bad-artifact", version: "4.0.0", runtime: index.RuntimeProcess,
				prepare: func(t *testing.T) {
					if err := os.WriteFile(filepath.Join(reg.dir, registry.ArtifactsDir, tamperedSum), []byte("#!/bin/sh\nexit 1\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				}, want: "artifact does not match the index"},
			{name: "an index signed by another key", rollout: "bad-key", version: "1.0.0", runtime: index.RuntimeProcess,
				prepare: func(t *testing.T) {
					other := t.TempDir()
					if _, err := index.WriteKeyPair(other); err != nil {
						t.Fatal(err)
					}
					k, err := index.ReadPrivateKey(filepath.Join(other, index.PrivateKeyFile))
					if err != nil {
						t.Fatal(err)
					}
					reg.sign(t, k, time.Now())
				}, undo: resign, want: "not signed by a trusted key"},
			{name: "an older index than the last accepted", rollout: "bad-rollback", version: "1.0.0", runtime: index.RuntimeProcess,
				prepare: func(t *testing.T) {
					if err := os.WriteFile(filepath.Join(reg.dir, registry.SignedFile), oldIndex, 0o644); err != nil {
						t.Fatal(err)
					}
				}, undo: resign, want: "rollback refused"},
			{name: "an expired index", rollout: "bad-expired", version: "1.0.0", runtime: index.RuntimeProcess,
				prepare: func(t *testing.T) { reg.sign(t, reg.key, time.Now().Add(-2*time.Hour)) }, undo: resign, want: "index expired"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.plugin == "" {
					tt.plugin, tt.module = "modbus", "modbus"
				}
				if tt.prepare != nil {
					tt.prepare(t)
				}
				if tt.undo != nil {
					defer tt.undo(t)
				}
				applyRollout(t, cloud, rns, tt.rollout, tt.plugin, tt.version, tt.runtime, tt.module, tt.granted)
				r := waitRollout(t, cloud, rns, tt.rollout, "Paused with the first node Failed", func(r *v1alpha1.PluginRollout) bool {
					return r.Status.Phase == "Paused" && nodeStatus(r, first.node).State == "Failed"
				})
				a, b := nodeStatus(r, first.node), nodeStatus(r, second.node)
				if !strings.Contains(a.Message, tt.want) || !strings.Contains(a.Message, "nothing installed") {
					t.Fatalf("%s's entry %+v, want a message naming %q and saying nothing was installed", first.node, a, tt.want)
				}
				if b.State != "Pending" || r.Status.Failed != 1 {
					t.Fatalf("%s is %+v, failed %d; want it Pending and one failure", second.node, b, r.Status.Failed)
				}
				for _, e := range edges {
					if entries, _ := filepath.Glob(filepath.Join(e.pluginsDir, tt.plugin, tt.version, "*")); len(entries) != 0 {
						t.Fatalf("%s: a refused plugin was installed: %v", e.node, entries)
					}
					runsV2(t, e)
					if st := e.module(t, "thermo-codec"); st.Runtime != modules.Builtin {
						t.Fatalf("%s: thermo-codec runs %+v, want the builtin one untouched", e.node, st)
					}
				}
			})
		}
	})

	t.Run("the second node never received v3", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(second.pluginsDir, "modbus", "3.0.0")); !os.IsNotExist(err) {
			t.Fatalf("%s has v3 in its plugins folder (%v)", second.node, err)
		}
		runsV2(t, second)
		if v := second.d.metric("kedge_pluginmanager_rollouts_total"); v != 1 {
			t.Fatalf("%s's pluginmanager reported %v results, want 1 (the v2 rollout only)", second.node, v)
		}
	})
}

// mapperBuilds are cmd/kedge-module built with the modbus module as `make module-modbus` does, once
// per release (-X main.version), and their sha256.
type mapperBuilds struct {
	v1, v1sum, v2, v2sum string
	err                  error
}

func buildModbusMapper(dir string) (b mapperBuilds) {
	for _, v := range []struct {
		version   string
		path, sum *string
	}{{"1.0.0", &b.v1, &b.v1sum}, {"2.0.0", &b.v2, &b.v2sum}} {
		*v.path = filepath.Join(dir, "modbus-"+v.version)
		cmd := exec.Command("go", "build", "-trimpath", "-tags", "kedge_custom kedge_modbus",
			"-ldflags", "-s -w -X main.moduleName=modbus -X main.version="+v.version, "-o", *v.path, "github.com/kedge-io/kedge/cmd/kedge-module")
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building the modbus mapper %s: %v\n%s", v.version, err, out)
			return b
		}
		if out, err := exec.Command(*v.path, "version").Output(); err != nil || strings.TrimSpace(string(out)) != "kedge-module modbus "+v.version {
			b.err = fmt.Errorf("%s version: %q (%v), want kedge-module modbus %s", *v.path, out, err, v.version)
			return b
		}
		if *v.sum, b.err = fileSum(*v.path); b.err != nil {
			return b
		}
	}
	if b.v1sum == b.v2sum {
		b.err = fmt.Errorf("mapper v1 and v2 are the same file (sha256 %s): -X main.version did not stamp it", b.v1sum)
	}
	return b
}

// packWASMStub writes an empty WASM module packed with a manifest that asks for send.resources:*
// and log: enough for the registry and the node's capability check, never run.
func packWASMStub(t *testing.T, path, version string) {
	t.Helper()
	m, err := manifest.ParseYAML([]byte("abi: 1\nversion: " + version + "\nlimits: {memoryPages: 16, deadline: 500ms}\ncapabilities:\n  send: {resources: [\"*\"]}\n  log: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	packed, err := manifest.Embed([]byte("\x00asm\x01\x00\x00\x00"), m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, packed, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rolloutRegistry is a plugin-registry folder (the one cloudhub serves) and its signing key.
type rolloutRegistry struct {
	dir, pubFile string
	key          ed25519.PrivateKey
}

func newRolloutRegistry(t *testing.T, dir, keys string) *rolloutRegistry {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := index.WriteKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	k, err := index.ReadPrivateKey(filepath.Join(keys, index.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return &rolloutRegistry{dir: dir, pubFile: filepath.Join(keys, index.PublicKeyFile), key: k}
}

// publish adds name@version's artifact (kind module or mapper) to the working index and returns its sha256.
func (r *rolloutRegistry) publish(t *testing.T, name, kind, version, rt, path string) string {
	t.Helper()
	req := registry.PublishRequest{Name: name, Version: version, Kind: kind, API: sdk.APIVersion, Runtime: rt, Path: path}
	if rt == index.RuntimeProcess {
		req.OS, req.Arch = runtime.GOOS, runtime.GOARCH
	}
	p, err := registry.Publish(r.dir, req)
	if err != nil {
		t.Fatalf("publish %s %s: %v", name, version, err)
	}
	for _, a := range p.Artifacts {
		if a.Runtime == rt {
			return a.SHA256
		}
	}
	t.Fatalf("published %s %s has no %s artifact", name, version, rt)
	return ""
}

// sign signs the working index with key, valid for an hour from now.
func (r *rolloutRegistry) sign(t *testing.T, key ed25519.PrivateKey, now time.Time) {
	t.Helper()
	if _, err := registry.Sign(r.dir, key, time.Hour, now); err != nil {
		t.Fatal(err)
	}
}

// rolloutEdge is one joined edgecore with its T-100 device, its MQTT subscription and pluginmanager.
type rolloutEdge struct {
	c                *cluster // this node's view: kubectl, nodeReady, applyT100Examples
	d                *daemon
	node, ns         string
	socket           string
	pluginsDir       string
	dev              *seqDevice
	mq               *mqttSub
	docTopic, device string
}

func startRolloutEdge(t *testing.T, cloud *cluster, node, token, sockDir, pubFile, mapperPath, mapperSum string) *rolloutEdge {
	t.Helper()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "edge")
	config := filepath.Join(dir, "edgecore.yaml")
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token,
		"--node-name", node, "--data-dir", dataDir, "--config-out", config,
		"--cert-port", strconv.Itoa(cloud.certPort), "--hub-port", strconv.Itoa(cloud.hubPort))
	if code != 0 {
		t.Fatalf("join %s: %d %s %s", node, code, out, stderr)
	}
	// The mapper's block goes into the config file: a process plugin decodes its settings strictly and
	// the environment's keys arrive lower-cased (backoffmax), which a builtin module accepts.
	setModuleBlock(t, config, "modbus", map[string]any{"enable": true, "runtime": "process", "path": mapperPath, "sha256": mapperSum,
		"dmiSocket": filepath.Join(sockDir, node+"-dmi.sock"), "socket": filepath.Join(sockDir, node, "mappers", "modbus.sock"),
		"callTimeout": "2s", "healthCycle": "1s", "backoffMin": "100ms", "backoffMax": "1s"})
	srv := startLibmodbusServer(t)
	e := &rolloutEdge{node: node, ns: "roll-" + node, socket: filepath.Join(sockDir, node+".sock"), pluginsDir: filepath.Join(dir, "plugins"),
		dev: startSeqDevice(t, srv, t100Registers), device: "modbus-t100-1"}
	e.docTopic = "$hw/events/device/" + e.device + "/twin/update/document"
	e.c = &cluster{t: t, k8s: cloud.k8s, node: node}
	certs := filepath.Join(dataDir, "certs")
	mqttPort := freePort(t)
	dmiSock := filepath.Join(sockDir, node+"-dmi.sock")
	e.d = start(t, "edgecore", []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "edge.db"),
		"KEDGE_ADMIN__SOCKET=" + e.socket,
		"KEDGE_PLUGINS__CACHEDIR=" + filepath.Join(dir, "wasm-cache"),
		"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime",
		"KEDGE_MODULES__NORUNTIME__ENABLE=true",
		"KEDGE_MODULES__EDGED__ENABLE=false",
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal",
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(mqttPort),
		"KEDGE_MODULES__DMI__SOCKET=" + dmiSock,
		"KEDGE_MODULES__DMI__RECONCILEINTERVAL=300ms",
		"KEDGE_MODULES__THERMO-CODEC__ENABLE=true",
		"KEDGE_MODULES__PLUGINMANAGER__ENABLE=true",
		"KEDGE_MODULES__PLUGINMANAGER__REGISTRYURL=https://127.0.0.1:" + strconv.Itoa(cloud.certPort) + "/registry",
		"KEDGE_MODULES__PLUGINMANAGER__CAFILE=" + filepath.Join(certs, "ca.crt"),
		"KEDGE_MODULES__PLUGINMANAGER__CERTFILE=" + filepath.Join(certs, "node.crt"),
		"KEDGE_MODULES__PLUGINMANAGER__KEYFILE=" + filepath.Join(certs, "node.key"),
		"KEDGE_MODULES__PLUGINMANAGER__TRUSTEDKEYS=[" + pubFile + "]",
		"KEDGE_MODULES__PLUGINMANAGER__PLUGINSDIR=" + e.pluginsDir,
		"KEDGE_MODULES__PLUGINMANAGER__CONTROLSOCKET=" + e.socket,
		"KEDGE_MODULES__PLUGINMANAGER__HEALTHTIMEOUT=20s",
		"KEDGE_MODULES__PLUGINMANAGER__HEALTHSTABLE=2s",
	}, "--config", config)
	e.d.socket = e.socket
	e.d.waitReadyOffline()
	e.mq = startMQTTSub(t, mqttPort)
	return e
}

// setModuleBlock sets modules.<name> in the config file at path.
func setModuleBlock(t *testing.T, path, name string, block map[string]any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	mods, _ := cfg["modules"].(map[string]any)
	if mods == nil {
		mods = map[string]any{}
		cfg["modules"] = mods
	}
	mods[name] = block
	if b, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *rolloutEdge) readings(t *testing.T) []t100Reading { return t100Readings(t, e.mq, e.docTopic) }

func (e *rolloutEdge) atLeast(t *testing.T, n int, what string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s: %d readings in devicetwin's documents (%s)", e.node, n, what), 60*time.Second, func() (bool, string) {
		got := len(e.readings(t))
		return got >= n, fmt.Sprintf("%d readings, %d served", got, len(e.dev.Served()))
	})
}

// module returns a module as edgecore's control socket reports it.
func (e *rolloutEdge) module(t *testing.T, name string) modules.Status {
	t.Helper()
	all, err := hostdaemon.NewControlClient(e.socket, 10*time.Second).Modules(context.Background())
	if err != nil {
		t.Fatalf("%s: module ls over the control socket: %v", e.node, err)
	}
	for _, st := range all {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("%s: module %s is not running: %+v", e.node, name, all)
	return modules.Status{}
}

// checkEveryReadingOnce: from the first reading that reached the twin on, every count the device
// served reached it exactly once and in order (none lost across the mapper swaps), every one decoded
// by the builtin codec (Celsius), and no read failed.
func (e *rolloutEdge) checkEveryReadingOnce(t *testing.T) {
	t.Helper()
	served := e.dev.Served()
	var got []t100Reading
	waitFor(t, e.node+": devicetwin's documents caught up with the reads served so far", 30*time.Second, func() (bool, string) {
		got = e.readings(t)
		return len(got) > 0 && len(served) > 0 && got[len(got)-1].count >= served[len(served)-1], fmt.Sprintf("%d readings, %d served", len(got), len(served))
	})
	first := -1
	for i, s := range served {
		if s == got[0].count {
			first = i
			break
		}
	}
	if first < 0 || first > 3 {
		t.Fatalf("%s: the first reading in the twin, count %d, is served read %d (of %d): reads before it never reached the twin", e.node, got[0].count, first, len(served))
	}
	for i, rd := range got {
		if first+i >= len(served) {
			break // read after the snapshot of served
		}
		if rd.count != served[first+i] || rd.kelvin {
			t.Fatalf("%s: reading %d is %v, the device served %d: a reading was lost, duplicated or reordered\ntwin: %v\nserved: %v",
				e.node, i, rd, served[first+i], got, served[first:])
		}
	}
	t.Logf("%s: %d reads served, %d readings in the twin", e.node, len(served), len(got))
	if v := e.d.metric("kedge_mapper_read_errors_total", `device="`+e.ns+"/"+e.device+`"`); v != 0 {
		t.Fatalf("%s: %v reads failed", e.node, v)
	}
}

// applyRollout applies a PluginRollout of plugin@version into module, selecting class=gateway, one
// node at a time.
func applyRollout(t *testing.T, c *cluster, ns, name, plugin, version, rt, module string, granted []string) {
	t.Helper()
	obj := map[string]any{
		"apiVersion": "kedge.io/v1alpha1", "kind": "PluginRollout",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"plugin": plugin, "version": version, "runtime": rt, "module": module,
			"nodeSelector": map[string]any{"matchLabels": map[string]any{"class": "gateway"}}, "maxParallel": 1,
			"grantedCapabilities": append([]string{}, granted...)},
	}
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.k8s.Kubectl("apply", "-f", p); err != nil {
		t.Fatalf("kubectl apply pluginrollout %s: %v\n%s", name, err, out)
	}
}

// waitRollout polls the rollout (kubectl get -o json) until cond holds for the current generation.
func waitRollout(t *testing.T, c *cluster, ns, name, what string, cond func(*v1alpha1.PluginRollout) bool) *v1alpha1.PluginRollout {
	t.Helper()
	var r *v1alpha1.PluginRollout
	waitFor(t, "pluginrollout "+name+": "+what, 120*time.Second, func() (bool, string) {
		out, err := c.k8s.Kubectl("get", "pluginrollout", name, "-n", ns, "-o", "json")
		if err != nil {
			return false, out
		}
		r = &v1alpha1.PluginRollout{}
		if err := json.Unmarshal([]byte(out), r); err != nil {
			return false, err.Error()
		}
		status, _ := json.Marshal(r.Status)
		return r.Status.ObservedGeneration == r.Generation && cond(r), string(status)
	})
	return r
}

func nodeStatus(r *v1alpha1.PluginRollout, node string) v1alpha1.NodeRolloutStatus {
	for _, n := range r.Status.Nodes {
		if n.Name == node {
			return n
		}
	}
	return v1alpha1.NodeRolloutStatus{}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
