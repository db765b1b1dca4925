package metaserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kedge-io/kedge/sdk"
)

// TokenType is the store type under which the cloud (edgecontroller) delivers a pod's bound
// service-account tokens (`<ns>/serviceaccounttoken/<pod>`); edged writes them into the pod's
// projected volumes, and the MetaServer authenticates them.
const TokenType = "serviceaccounttoken"

// Identity is who a request is from.
type Identity struct {
	// Admin is the node-admin token's holder: it sees everything the node holds.
	Admin bool
	// Namespace, Pod and PodUID name the pod whose service-account token was presented.
	Namespace, Pod, PodUID string
	// ServiceAccount is the pod's service account (for messages, as system:serviceaccount:<ns>:<sa>).
	ServiceAccount string
}

// User is the name the API server would give the caller.
func (id Identity) User() string {
	if id.Admin {
		return "kedge:metaserver-admin"
	}
	return "system:serviceaccount:" + id.Namespace + ":" + id.ServiceAccount
}

// podToken is one token the node holds, as the cloud issued it.
type podToken struct {
	key     sdk.Key // its serviceaccounttoken object
	token   []byte
	expires time.Time // zero: no expiry was given
	ns, pod string
	podUID  string
}

// Authenticator knows the tokens the node holds: the node-admin token and the pods' bound
// service-account tokens, kept in step with the store by Server.Load and Server.Record.
type Authenticator struct {
	admin []byte
	now   func() time.Time

	mu     sync.RWMutex
	bySum  map[[32]byte]podToken  // sha256(token) -> token
	byKey  map[sdk.Key][][32]byte // serviceaccounttoken object -> the sums it added
	grants map[sdk.Key]cachedGrant
}

// NewAuthenticator builds an authenticator with the node-admin token (empty: no admin token; node
// agents are then refused).
func NewAuthenticator(adminToken string) *Authenticator {
	return &Authenticator{admin: []byte(adminToken), now: time.Now, bySum: map[[32]byte]podToken{}, byKey: map[sdk.Key][][32]byte{},
		grants: map[sdk.Key]cachedGrant{}}
}

// storedTokens is the object edgecontroller sends (edgecontroller.PodTokens), the fields read here.
type storedTokens struct {
	PodUID string `json:"podUID"`
	Tokens []struct {
		Audience            string    `json:"audience"`
		Token               string    `json:"token"`
		ExpirationTimestamp time.Time `json:"expirationTimestamp"`
	} `json:"tokens"`
}

// setTokens replaces what the object at k contributed; value nil (a delete) removes it.
func (a *Authenticator) setTokens(k sdk.Key, value []byte) error {
	var st storedTokens
	var err error
	if value != nil {
		if err = json.Unmarshal(value, &st); err != nil {
			st = storedTokens{} // a broken object authenticates nobody
			err = fmt.Errorf("%s: decode: %w", k.String(), err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropLocked(k)
	for _, t := range st.Tokens {
		// Only tokens for the API server's own audience are accepted, as the API server would: a token
		// issued for another audience (vault, a cloud provider) must not open the node's API.
		if t.Token == "" || t.Audience != "" {
			continue
		}
		sum := sha256.Sum256([]byte(t.Token))
		a.bySum[sum] = podToken{key: k, token: []byte(t.Token), expires: t.ExpirationTimestamp, ns: k.Namespace, pod: k.Name, podUID: st.PodUID}
		a.byKey[k] = append(a.byKey[k], sum)
	}
	return err
}

func (a *Authenticator) dropLocked(k sdk.Key) {
	for _, sum := range a.byKey[k] {
		delete(a.bySum, sum)
	}
	delete(a.byKey, k)
}

// Errors of authentication; each is a 401 with the API server's plain "Unauthorized" body.
var (
	errNoToken      = errors.New("no bearer token")
	errUnknownToken = errors.New("the token is not one this node issued to a pod or to its admin")
	errExpired      = errors.New("the token has expired")
	errPodGone      = errors.New("the token's pod is no longer on this node")
)

// bearer returns the request's bearer token.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(p):])
	return tok, tok != ""
}

// lookup finds the token: the admin token by a constant-time comparison; a pod's token by its SHA-256
// (the map is keyed by the digest, so the lookup's timing depends on the digest, not on the token's
// bytes) and then a constant-time comparison with the stored token.
func (a *Authenticator) lookup(tok string) (podToken, bool, error) {
	if len(a.admin) > 0 && subtle.ConstantTimeCompare([]byte(tok), a.admin) == 1 {
		return podToken{}, true, nil
	}
	sum := sha256.Sum256([]byte(tok))
	a.mu.RLock()
	pt, ok := a.bySum[sum]
	a.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare(pt.token, []byte(tok)) != 1 {
		return podToken{}, false, errUnknownToken
	}
	if !pt.expires.IsZero() && !a.now().Before(pt.expires) {
		return podToken{}, false, errExpired
	}
	return pt, false, nil
}

// still says whether a pod identity's token is still held (a watch ends when it is not).
func (a *Authenticator) still(id Identity, tok string) bool {
	if id.Admin {
		return true
	}
	_, _, err := a.lookup(tok)
	return err == nil
}

// grant is what a pod identity may read.
type grant struct {
	id         Identity
	configMaps map[string]bool
	secrets    map[string]bool
}

// authenticate returns who sent r, and for a pod what it may read. The pod must be on this node with
// the token's UID: a deleted pod's tokens are removed by the cloud, and a token left from an older pod
// of the same name is refused too.
func (s *Server) authenticate(r *http.Request) (Identity, *grant, string, error) {
	tok, ok := bearer(r)
	if !ok {
		return Identity{}, nil, "", errNoToken
	}
	pt, admin, err := s.opts.Auth.lookup(tok)
	if err != nil {
		return Identity{}, nil, "", err
	}
	if admin {
		return Identity{Admin: true}, nil, tok, nil
	}
	obj, err := s.opts.Store.Get(r.Context(), sdk.Key{Type: "pod", Namespace: pt.ns, Name: pt.pod})
	if errors.Is(err, sdk.ErrNotFound) {
		return Identity{}, nil, "", errPodGone
	}
	if err != nil {
		return Identity{}, nil, "", fmt.Errorf("read the token's pod %s/%s: %w", pt.ns, pt.pod, err)
	}
	g, err := s.opts.Auth.grantFor(obj)
	if err != nil {
		return Identity{}, nil, "", err
	}
	if pt.podUID != "" && g.id.PodUID != pt.podUID {
		return Identity{}, nil, "", errPodGone
	}
	return g.id, g, tok, nil
}

// grantFor decodes a stored pod into what it may read; the last grant of each pod is kept and reused
// while the stored pod is the same (same resourceVersion and bytes' length), so a pod's requests do
// not decode its spec each time.
func (a *Authenticator) grantFor(obj sdk.Object) (*grant, error) {
	a.mu.RLock()
	c, ok := a.grants[obj.Key]
	a.mu.RUnlock()
	if ok && c.rv == obj.ResourceVersion && obj.ResourceVersion != 0 && c.size == len(obj.Value) {
		return c.g, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(obj.Value, &pod); err != nil {
		return nil, fmt.Errorf("the token's pod %s/%s: decode: %w", obj.Namespace, obj.Name, err)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	id := Identity{Namespace: obj.Namespace, Pod: obj.Name, PodUID: string(pod.UID), ServiceAccount: sa}
	g := &grant{id: id, configMaps: map[string]bool{}, secrets: map[string]bool{}}
	referenced(&pod, g)
	a.mu.Lock()
	if len(a.grants) >= maxGrants {
		clear(a.grants)
	}
	a.grants[obj.Key] = cachedGrant{rv: obj.ResourceVersion, size: len(obj.Value), g: g}
	a.mu.Unlock()
	return g, nil
}

// maxGrants bounds the grant cache (a node runs far fewer pods).
const maxGrants = 4096

type cachedGrant struct {
	rv   uint64
	size int
	g    *grant
}

// referenced fills g with the ConfigMaps and Secrets the pod's spec names: volumes (also projected),
// env and envFrom of every container, init and ephemeral container, and imagePullSecrets — what the
// kubelet may read for it under NodeRestriction.
func referenced(p *corev1.Pod, g *grant) {
	for _, v := range p.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			g.configMaps[v.ConfigMap.Name] = true
		case v.Secret != nil:
			g.secrets[v.Secret.SecretName] = true
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					g.configMaps[src.ConfigMap.Name] = true
				}
				if src.Secret != nil {
					g.secrets[src.Secret.Name] = true
				}
			}
		}
	}
	for _, s := range p.Spec.ImagePullSecrets {
		g.secrets[s.Name] = true
	}
	env := func(envs []corev1.EnvVar, from []corev1.EnvFromSource) {
		for _, e := range envs {
			if e.ValueFrom == nil {
				continue
			}
			if e.ValueFrom.ConfigMapKeyRef != nil {
				g.configMaps[e.ValueFrom.ConfigMapKeyRef.Name] = true
			}
			if e.ValueFrom.SecretKeyRef != nil {
				g.secrets[e.ValueFrom.SecretKeyRef.Name] = true
			}
		}
		for _, f := range from {
			if f.ConfigMapRef != nil {
				g.configMaps[f.ConfigMapRef.Name] = true
			}
			if f.SecretRef != nil {
				g.secrets[f.SecretRef.Name] = true
			}
		}
	}
	for _, c := range p.Spec.InitContainers {
		env(c.Env, c.EnvFrom)
	}
	for _, c := range p.Spec.Containers {
		env(c.Env, c.EnvFrom)
	}
	for _, c := range p.Spec.EphemeralContainers {
		env(c.Env, c.EnvFrom)
	}
}

// mayRead says whether the grant covers the object; nil is the admin (everything). Services of the
// pod's own namespace are readable: the kubelet already gives every pod their addresses as
// environment variables. Nodes are not (a node agent uses the admin token).
func (g *grant) mayRead(res resource, ns, name string) bool {
	if g == nil {
		return true
	}
	if ns != g.id.Namespace {
		return false
	}
	switch res.storeType {
	case "pod":
		return name == g.id.Pod
	case "configmap":
		return g.configMaps[name]
	case "secret":
		return g.secrets[name]
	case "service":
		return true
	}
	return false
}

// mayList says whether the grant may list or watch res at all (the items are then filtered by
// mayRead).
func (g *grant) mayList(res resource) bool {
	return g == nil || res.storeType != "node"
}

// AdminToken reads the node-admin token at path, creating it (32 random bytes, base64url, mode 0600)
// when it is missing; a file others may read is tightened to 0600 and logged.
func AdminToken(path string, log *slog.Logger) (string, error) {
	if path == "" {
		return "", nil
	}
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("metaServer.adminTokenFile %s: create its folder: %w", path, err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		tok := base64.RawURLEncoding.EncodeToString(b)
		_, werr := f.WriteString(tok + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			_ = os.Remove(path)
			return "", fmt.Errorf("metaServer.adminTokenFile %s: write: %w", path, werr)
		}
		log.Info("metaserver node-admin token created", "file", path)
		return tok, nil
	case !errors.Is(err, os.ErrExist):
		return "", fmt.Errorf("metaServer.adminTokenFile %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("metaServer.adminTokenFile %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("metaServer.adminTokenFile %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("metaServer.adminTokenFile %s has mode %#o and cannot be tightened to 0600: %w", path, fi.Mode().Perm(), err)
		}
		log.Warn("metaserver node-admin token file was readable beyond its owner; tightened", "file", path,
			"was", fmt.Sprintf("%#o", fi.Mode().Perm()), "now", "0600")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("metaServer.adminTokenFile %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(raw))
	if len(tok) < 32 || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("metaServer.adminTokenFile %s: the token must be one line of at least 32 characters without spaces (delete the file to get a new one)", path)
	}
	return tok, nil
}

// loadTokens indexes the tokens among the stored objects.
func (a *Authenticator) loadTokens(objs []sdk.Object, log *slog.Logger) {
	for _, o := range objs {
		if o.Type == TokenType {
			if err := a.setTokens(o.Key, o.Value); err != nil {
				log.Warn("stored service-account tokens not usable for the metaserver", "err", err)
			}
		}
	}
}

// ServingCertificate loads the MetaServer's TLS certificate from certFile and keyFile, creating a
// self-signed one (ECDSA P-256, for 127.0.0.1, ::1 and localhost, valid a year, key mode 0600) when
// either is missing or the certificate has expired. Clients trust certFile itself
// (--certificate-authority / certificate-authority in a kubeconfig).
func ServingCertificate(certFile, keyFile string, log *slog.Logger) (tls.Certificate, error) {
	if log == nil {
		log = slog.Default()
	}
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if leaf, perr := x509.ParseCertificate(cert.Certificate[0]); perr == nil && time.Now().Before(leaf.NotAfter) {
			return cert, nil
		}
		log.Warn("metaserver certificate expired; making a new one", "certFile", certFile)
	} else if !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("metaServer.certFile %s / keyFile %s: %w (delete both to get a new self-signed pair)", certFile, keyFile, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "kedge-metaserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, // its own trust anchor
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
		blk  *pem.Block
	}{{keyFile, 0o600, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}}, {certFile, 0o644, &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return tls.Certificate{}, fmt.Errorf("metaserver certificate: %w", err)
		}
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.blk), f.mode); err != nil {
			return tls.Certificate{}, fmt.Errorf("metaserver certificate: %w", err)
		}
		if err := os.Chmod(tmp, f.mode); err != nil {
			return tls.Certificate{}, err
		}
		if err := os.Rename(tmp, f.path); err != nil {
			return tls.Certificate{}, fmt.Errorf("metaserver certificate: %w", err)
		}
	}
	log.Info("metaserver self-signed certificate created", "certFile", certFile, "keyFile", keyFile)
	return tls.LoadX509KeyPair(certFile, keyFile)
}
