// Package k8senv starts a real Kubernetes control plane (etcd + kube-apiserver v1.36.3, built by
// hack/controlplane.sh) for Go tests, through controller-runtime's envtest.
//
// The binaries come from $KUBEBUILDER_ASSETS (make test sets it); when unset, hack/controlplane.sh
// bindir is run, which builds them on first use (minutes, with progress) and reuses them afterwards.
package k8senv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kedge-io/kedge/test/slow"
)

// envtest logs through controller-runtime's logger, which prints a stack trace into every test's
// output when nothing was set; its few lines add nothing to the API server's own log.
func init() { ctrllog.SetLogger(logr.Discard()) }

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

// FrontProxy is what API aggregation needs: the requestheader client CA and the client certificate
// the kube-apiserver presents to aggregated API servers (--proxy-client-cert-file), its files in a
// folder of the caller's.
type FrontProxy struct {
	CAFile, CertFile, KeyFile string
	// AllowedName is the client certificate's CN, the only --requestheader-allowed-names.
	AllowedName string

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// NewFrontProxy creates a front-proxy CA and its client certificate (CN front-proxy-client) in dir.
func NewFrontProxy(dir string) (*FrontProxy, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kedge-test-front-proxy-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	fp := &FrontProxy{CAFile: filepath.Join(dir, "front-proxy-ca.crt"), CertFile: filepath.Join(dir, "front-proxy-client.crt"),
		KeyFile: filepath.Join(dir, "front-proxy-client.key"), AllowedName: "front-proxy-client", ca: ca, caKey: key}
	if err := os.WriteFile(fp.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := fp.issue(fp.AllowedName)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(fp.CertFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	return fp, os.WriteFile(fp.KeyFile, keyPEM, 0o600)
}

func (fp *FrontProxy) issue(cn string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, fp.ca, &key.PublicKey, fp.caKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// ClientCert issues another client certificate from the front-proxy CA (e.g. with a CN that is not
// allowed), for tests of an aggregated API server's authentication.
func (fp *FrontProxy) ClientCert(cn string) (tls.Certificate, error) {
	c, k, err := fp.issue(cn)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(c, k)
}

// WithAggregation starts the kube-apiserver with the flags of API aggregation: the requestheader
// client CA, allowed names and X-Remote-* headers, and the proxy client certificate of fp. Aggregated
// APIs are reached through their APIService's Service (an ExternalName Service works: the default
// --enable-aggregator-routing=false resolves it).
func WithAggregation(fp *FrontProxy) Option {
	return func(e *envtest.Environment) {
		a := e.ControlPlane.GetAPIServer().Configure()
		a.Set("requestheader-client-ca-file", fp.CAFile)
		a.Set("requestheader-allowed-names", fp.AllowedName)
		a.Set("requestheader-extra-headers-prefix", "X-Remote-Extra-")
		a.Set("requestheader-group-headers", "X-Remote-Group")
		a.Set("requestheader-username-headers", "X-Remote-User")
		a.Set("proxy-client-cert-file", fp.CertFile)
		a.Set("proxy-client-key-file", fp.KeyFile)
	}
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
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		// envtest's 20 s per try is not enough for etcd and kube-apiserver on a busy 2-core machine
		// (seen at load 30: every try timed out); scaled by KEDGE_TEST_TIMEOUT_SCALE.
		e.ControlPlaneStartTimeout = slow.Scale(2 * time.Minute)
	}
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
