package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// upstreamEdge is KubeEdge v1.23.1's edgecore (from kubeedgeDir) run by a test on its own containerd
// and cgroup root, restartable; each run logs into its own buffer.
type upstreamEdge struct {
	t      *testing.T
	bin    string
	cfg    string
	dir    string
	node   string
	cri    *crienv.Client
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{}
	logs   []*syncBuffer
	stopMu sync.Mutex
}

// newUpstreamEdge writes the config of an upstream edgecore named node that joins the cloud at
// hubPort/certPort with token, on a private containerd (bridge and subnet must be unique on the
// machine), changed further by each tweak of its config, and starts it. It is stopped, its pods'
// sandboxes removed and its mounts undone after the test; on failure its log is printed.
func newUpstreamEdge(t *testing.T, keDir, node, token string, hubPort, certPort int, bridge, subnet, podNamespace string, tweaks ...func(cfg map[string]any)) *upstreamEdge {
	t.Helper()
	cri, criClient := crienv.StartPrivate(t, bridge, subnet)
	cgroupRoot(t, node)
	dir := filepath.Join(t.TempDir(), "edge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(keDir, "edgecore")
	e := &upstreamEdge{t: t, bin: bin, dir: dir, node: node, cri: criClient,
		cfg: upstreamEdgecoreConfig(t, bin, dir, node, token, hubPort, certPort, cri)}
	if len(tweaks) > 0 {
		raw, err := os.ReadFile(e.cfg)
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		for _, tw := range tweaks {
			tw(cfg)
		}
		if raw, err = yaml.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(e.cfg, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	t.Cleanup(func() {
		e.stop()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = criClient.RemoveSandboxes(ctx, map[string]string{"io.kubernetes.pod.namespace": podNamespace})
		unmountUnder(t, dir)
		if t.Failed() {
			t.Logf("upstream edgecore %s log (last 12 KiB):\n%s", node, tail(e.log.String(), 12<<10))
		}
	})
	return e
}

func (e *upstreamEdge) start() {
	e.t.Helper()
	e.log = &syncBuffer{}
	e.logs = append(e.logs, e.log)
	e.cmd = exec.Command(e.bin, "--config", e.cfg, "--v", "2")
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	e.done = done
	go func(c *exec.Cmd) { _ = c.Wait(); close(done) }(e.cmd)
}

func (e *upstreamEdge) stop() {
	e.stopMu.Lock()
	defer e.stopMu.Unlock()
	select {
	case <-e.done:
		return
	default:
	}
	_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
	}
}

// exited reports whether the current run ended.
func (e *upstreamEdge) exited() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// runControllerManager runs the built kube-controller-manager against env (service accounts and
// kube-root-ca.crt, node lifecycle with taints, Deployments, ...) until the test ends; envtest's
// service-account signing key is not one it has, so the token controller stays off.
func runControllerManager(t *testing.T, env *k8senv.Env, extra ...string) {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command(filepath.Join(env.BinDir, "kube-controller-manager"), append([]string{
		"--kubeconfig", env.Kubeconfig, "--authentication-kubeconfig", env.Kubeconfig,
		"--authorization-kubeconfig", env.Kubeconfig, "--bind-address", "127.0.0.1", "--secure-port", "0",
		"--leader-elect=false", "--use-service-account-credentials=false", "--controllers", "*,-serviceaccount-token"}, extra...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("kube-controller-manager output (last 4000 bytes):\n%s", tail(out.String(), 4000))
		}
	})
}

// reportEvents turns on edged's reportEvent (off by default in KubeEdge v1.23.1): its kubelet's
// Events go to the cloud.
func reportEvents(cfg map[string]any) {
	cfg["modules"].(map[string]any)["edged"].(map[string]any)["reportEvent"] = true
}
