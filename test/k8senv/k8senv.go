// Package k8senv starts a real Kubernetes control plane (etcd + kube-apiserver v1.36.3, built by
// hack/controlplane.sh) for Go tests, through controller-runtime's envtest.
//
// The binaries come from $KUBEBUILDER_ASSETS (make test sets it); when unset, hack/controlplane.sh
// bindir is run, which builds them on first use (minutes, with progress) and reuses them afterwards.
package k8senv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Env is one running control plane.
type Env struct {
	// Config reaches the API server as a cluster admin (system:masters).
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// Kubeconfig is the path of an admin kubeconfig file, for binaries under test and kubectl.
	Kubeconfig string
	// BinDir holds kube-apiserver, etcd and kubectl.
	BinDir string

	env *envtest.Environment
	dir string
}

var (
	assetsOnce sync.Once
	assetsDir  string
	assetsErr  error
)

// Assets returns the folder with the control-plane binaries, building them when needed.
func Assets() (string, error) {
	assetsOnce.Do(func() {
		if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
			assetsDir = d
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command(filepath.Join(root, "hack", "controlplane.sh"), "bindir")
		cmd.Stderr = os.Stderr // progress lines of a cold build
		out, err := cmd.Output()
		if err != nil {
			assetsErr = fmt.Errorf("building the control plane (hack/controlplane.sh bindir): %w", err)
			return
		}
		assetsDir = strings.TrimSpace(string(out))
	})
	return assetsDir, assetsErr
}

// Option changes how Start runs the control plane.
type Option func(*envtest.Environment)

// APIServerFlag sets an extra kube-apiserver flag (e.g. "kubelet-client-certificate", a path); later
// options win over earlier ones and over envtest's defaults.
func APIServerFlag(name string, values ...string) Option {
	return func(e *envtest.Environment) { e.ControlPlane.GetAPIServer().Configure().Set(name, values...) }
}

// Start runs etcd and kube-apiserver on loopback ports and returns once the API answers.
func Start(opts ...Option) (*Env, error) {
	bin, err := Assets()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s (KUBEBUILDER_ASSETS): run hack/controlplane.sh build", bin)
	}
	e := &envtest.Environment{BinaryAssetsDirectory: bin, ControlPlaneStopTimeout: 60e9}
	for _, o := range opts {
		o(e)
	}
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane from %s: %w", bin, err)
	}
	env := &Env{Config: cfg, BinDir: bin, env: e}
	if env.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		_ = e.Stop()
		return nil, err
	}
	if env.dir, err = os.MkdirTemp("", "kedge-k8senv-"); err != nil {
		_ = e.Stop()
		return nil, err
	}
	admin, err := e.AddUser(envtest.User{Name: "kedge-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	env.Kubeconfig = filepath.Join(env.dir, "kubeconfig")
	if err := os.WriteFile(env.Kubeconfig, kc, 0o600); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return env, nil
}

// Stop stops the API server, then etcd, and removes the kubeconfig.
func (e *Env) Stop() error {
	var errs []error
	if e.env != nil {
		errs = append(errs, e.env.Stop())
	}
	if e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

// Kubectl runs the built kubectl against the environment and returns its combined output.
func (e *Env) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(e.BinDir, "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
