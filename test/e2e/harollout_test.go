package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/test/k8senv"
)

// A PluginRollout in progress when the cloudcore process leading rollouts is killed with SIGKILL
// completes under a surviving replica, and every node installs the generation exactly once. Three
// cloudcores behind HAProxy (hub and certificate ports; each serves the same signed plugin
// registry), three real edgecores joined through it, each running the modbus mapper v1 as a process
// plugin; a rollout of v2, one node at a time (each install held for healthStable so the rollout
// takes a while). Once a node is Updated and the rollout is not complete, the replica holding the
// rollouts' leader Lease is killed with SIGKILL; its nodes reconnect to the others, another replica
// takes the Lease, and the rollout ends Complete with 3 Updated. Each edgecore swapped modbus once
// (kedge_module_swaps_total), and runs v2.
func TestARolloutWhoseLeaderCloudcoreIsKilledCompletesOnEveryNodeExactlyOnce(t *testing.T) {
	needBinaries(t)
	builds := make(chan mapperBuilds, 1)
	go func() { builds <- buildModbusMapper(t.TempDir()) }()
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "kedge-ha-rollout"
	if _, err := k8s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	reg := newRolloutRegistry(t, filepath.Join(dir, "registry"), filepath.Join(dir, "keys"))
	var rs []*haReplica
	for i := range 3 {
		rs = append(rs, &haReplica{name: fmt.Sprintf("ro-cc-%d", i), hub: freePort(t), certs: freePort(t)})
	}
	lbHub, lbCerts := freePort(t), freePort(t)
	for _, r := range rs { // one at a time: the first creates the CA Secret, the others load it
		r.d = start(t, "cloudcore", []string{
			"KEDGE_INSTANCE__NAME=" + r.name, "KEDGE_SHUTDOWNTIMEOUT=15s",
			"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(r.hub),
			"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(r.certs),
			"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + filepath.Join(dir, r.name, "pki"),
			"KEDGE_MODULES__CLOUDHUB__REGISTRYDIR=" + reg.dir,
			"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s", "KEDGE_MODULES__CLOUDHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__CLOUDHUB__CASECRET__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__CASECRET__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__CASECRET__NAMESPACE=" + ns,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__NAMESPACE=" + ns, "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__REPLICALEASEDURATION=6s",
			"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true", "KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__EDGECONTROLLER__NODEGRACEPERIOD=20s", "KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__NAMESPACE=" + ns,
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__LEASEDURATION=4s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RENEWDEADLINE=3s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RETRYPERIOD=500ms",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__ENABLE=true", "KEDGE_MODULES__ROLLOUTCONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__ROLLOUTCONTROLLER__LEADERELECTION__NAMESPACE=" + ns,
			"KEDGE_MODULES__ROLLOUTCONTROLLER__LEADERELECTION__LEASEDURATION=4s",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__LEADERELECTION__RENEWDEADLINE=3s",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__LEADERELECTION__RETRYPERIOD=500ms",
		})
		r.d.waitReady()
	}
	startHAProxy(t, lbHub, lbCerts, rs)
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--ca-secret", ns+"/"+kubestore.DefaultCASecretName,
		"--kubeconfig", k8s.Kubeconfig, "--uses", "3")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	mb := <-builds
	if mb.err != nil {
		t.Fatal(mb.err)
	}
	sockDir, err := os.MkdirTemp("", "khr") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	type edge struct {
		node, socket, pluginsDir string
		d                        *daemon
	}
	var edges []*edge
	for i := range 3 {
		e := &edge{node: fmt.Sprintf("ro-edge-%d", i), socket: filepath.Join(sockDir, fmt.Sprintf("e%d.sock", i))}
		edir := filepath.Join(dir, e.node)
		data, conf := filepath.Join(edir, "data"), filepath.Join(edir, "edgecore.yaml")
		e.pluginsDir = filepath.Join(edir, "plugins")
		waitFor(t, "join of "+e.node+" through haproxy", 60*time.Second, func() (bool, string) {
			code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
				"--node-name", e.node, "--data-dir", data, "--config-out", conf,
				"--cert-port", strconv.Itoa(lbCerts), "--hub-port", strconv.Itoa(lbHub))
			return code == 0, out + stderr
		})
		dmiSock := filepath.Join(sockDir, fmt.Sprintf("e%d-dmi.sock", i))
		setModuleBlock(t, conf, "modbus", map[string]any{"enable": true, "runtime": "process", "path": mb.v1, "sha256": mb.v1sum,
			"dmiSocket": dmiSock, "socket": filepath.Join(sockDir, fmt.Sprintf("e%d-modbus.sock", i)),
			"callTimeout": "2s", "healthCycle": "1s", "backoffMin": "100ms", "backoffMax": "1s"})
		certs := filepath.Join(data, "certs")
		e.d = start(t, "edgecore", []string{
			"KEDGE_STORE__PATH=" + filepath.Join(edir, "edge.db"),
			"KEDGE_ADMIN__SOCKET=" + e.socket,
			"KEDGE_PLUGINS__CACHEDIR=" + filepath.Join(edir, "wasm-cache"),
			"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
			"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime", "KEDGE_MODULES__NORUNTIME__ENABLE=true",
			"KEDGE_MODULES__EDGED__ENABLE=false",
			"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
			"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal",
			"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
			"KEDGE_MODULES__DMI__SOCKET=" + dmiSock,
			"KEDGE_MODULES__PLUGINMANAGER__ENABLE=true",
			"KEDGE_MODULES__PLUGINMANAGER__REGISTRYURL=https://127.0.0.1:" + strconv.Itoa(lbCerts) + "/registry",
			"KEDGE_MODULES__PLUGINMANAGER__CAFILE=" + filepath.Join(certs, "ca.crt"),
			"KEDGE_MODULES__PLUGINMANAGER__CERTFILE=" + filepath.Join(certs, "node.crt"),
			"KEDGE_MODULES__PLUGINMANAGER__KEYFILE=" + filepath.Join(certs, "node.key"),
			"KEDGE_MODULES__PLUGINMANAGER__TRUSTEDKEYS=[" + reg.pubFile + "]",
			"KEDGE_MODULES__PLUGINMANAGER__PLUGINSDIR=" + e.pluginsDir,
			"KEDGE_MODULES__PLUGINMANAGER__CONTROLSOCKET=" + e.socket,
			"KEDGE_MODULES__PLUGINMANAGER__HEALTHTIMEOUT=30s",
			// Each install waits this long for the new mapper to stay healthy: the rollout lasts
			// long enough to be caught in the middle.
			"KEDGE_MODULES__PLUGINMANAGER__HEALTHSTABLE=5s",
		}, "--config", conf)
		e.d.socket = e.socket
		e.d.waitReadyOffline()
		edges = append(edges, e)
	}
	kc := &cluster{t: t, k8s: k8s}
	for _, e := range edges {
		waitFor(t, e.node+" Ready", 90*time.Second, func() (bool, string) {
			s := nodeReadyStatus(k8s.Client, e.node)
			return s == "True", s
		})
		kc.kubectl("label", "node", e.node, "class=gateway")
	}

	reg.publish(t, "modbus", "mapper", "1.0.0", index.RuntimeProcess, mb.v1)
	reg.publish(t, "modbus", "mapper", "2.0.0", index.RuntimeProcess, mb.v2)
	reg.sign(t, reg.key, time.Now())
	const rns = "default"
	applyRollout(t, kc, rns, "mapper", "modbus", "2.0.0", index.RuntimeProcess, "modbus", nil)

	// Mid-rollout: at least one node Updated, not all of them.
	mid := waitRollout(t, kc, rns, "mapper", "a node Updated, the rollout not complete", func(r *v1alpha1.PluginRollout) bool {
		return r.Status.Updated >= 1 && r.Status.Updated < 3
	})
	l, err := k8s.Client.CoordinationV1().Leases(ns).Get(ctx, "kedge-rolloutcontroller", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		t.Fatalf("the rollouts' leader Lease: %v %+v", err, l)
	}
	var leader *haReplica
	for _, r := range rs {
		if r.name == *l.Spec.HolderIdentity {
			leader = r
		}
	}
	if leader == nil {
		t.Fatalf("the rollouts' Lease names %q, not a replica", *l.Spec.HolderIdentity)
	}
	t.Logf("SIGKILL of %s, the rollouts' leader, holding %v nodes, with %d of 3 nodes updated", leader.name,
		leader.d.metric("kedge_cloudhub_connected_nodes"), mid.Status.Updated)
	_ = leader.d.cmd.Process.Kill()
	<-leader.d.exited

	done := waitRollout(t, kc, rns, "mapper", "Complete with 3 nodes Updated under a surviving leader", func(r *v1alpha1.PluginRollout) bool {
		return r.Status.Phase == v1alpha1.PhaseComplete && r.Status.Updated == 3
	})
	for _, n := range done.Status.Nodes {
		if n.State != v1alpha1.NodeUpdated || n.Version != "2.0.0" {
			t.Fatalf("node entry %+v, want Updated at 2.0.0", n)
		}
	}
	if l, err := k8s.Client.CoordinationV1().Leases(ns).Get(ctx, "kedge-rolloutcontroller", metav1.GetOptions{}); err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == leader.name {
		t.Fatalf("the rollouts' Lease after the kill: %v %+v, want a surviving holder", err, l)
	}
	for _, e := range edges {
		want := filepath.Join(e.pluginsDir, "modbus", "2.0.0", "modbus")
		waitFor(t, e.node+" runs modbus v2", 60*time.Second, func() (bool, string) {
			st := (&rolloutEdge{socket: e.socket}).module(t, "modbus")
			return st.Runtime == modules.Process && st.Path == want && st.Health == "", fmt.Sprintf("%+v", st)
		})
		if v := e.d.metric("kedge_module_swaps_total", `module="modbus"`, `result="ok"`); v != 1 {
			t.Fatalf("%s swapped modbus %v times, want exactly 1 (generation 1 installed once)", e.node, v)
		}
		if v := e.d.metric("kedge_module_swaps_total", `module="modbus"`, `result="rolled_back"`); v != 0 {
			t.Fatalf("%s rolled modbus back %v times", e.node, v)
		}
		t.Logf("%s: modbus swapped once; pluginmanager results reported: %v", e.node, e.d.metric("kedge_pluginmanager_rollouts_total"))
	}
}
