package k8senv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubeletClient is the client certificate a kube-apiserver presents when it calls a kubelet's API
// (logs, exec, attach, port-forward: --kubelet-client-certificate/--kubelet-client-key) and the CA
// that issued it, which the kubelet side (cloudstream's clientCAFile) trusts. Files in a folder of
// the caller's.
type KubeletClient struct {
	CAFile, CertFile, KeyFile string
	// CommonName is the client certificate's CN (kubeadm's: kube-apiserver-kubelet-client).
	CommonName string
	// Cert is the same client certificate for Go clients.
	Cert tls.Certificate
}

// NewKubeletClient creates a CA and a client certificate from it (CN kube-apiserver-kubelet-client,
// group system:masters, as kubeadm made it) in dir.
func NewKubeletClient(dir string) (*KubeletClient, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kedge-test-kubelet-client-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	kc := &KubeletClient{CAFile: filepath.Join(dir, "kubelet-client-ca.crt"), CertFile: filepath.Join(dir, "kubelet-client.crt"),
		KeyFile: filepath.Join(dir, "kubelet-client.key"), CommonName: "kube-apiserver-kubelet-client"}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: kc.CommonName, Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	for f, b := range map[string]*pem.Block{kc.CAFile: {Type: "CERTIFICATE", Bytes: caDER},
		kc.CertFile: {Type: "CERTIFICATE", Bytes: der}, kc.KeyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			return nil, err
		}
	}
	if kc.Cert, err = tls.LoadX509KeyPair(kc.CertFile, kc.KeyFile); err != nil {
		return nil, err
	}
	return kc, nil
}

// WithKubeletClient starts the kube-apiserver presenting kc's certificate to kubelets.
func WithKubeletClient(kc *KubeletClient) Option {
	return func(e *envtest.Environment) {
		a := e.ControlPlane.GetAPIServer().Configure()
		a.Set("kubelet-client-certificate", kc.CertFile)
		a.Set("kubelet-client-key", kc.KeyFile)
	}
}
