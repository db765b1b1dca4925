package cloudstream

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The configmap the kube-apiserver writes with its authentication settings for aggregated APIs.
const (
	authConfigMapNamespace = "kube-system"
	authConfigMapName      = "extension-apiserver-authentication"
)

// frontProxy authenticates the kube-apiserver's proxied requests (its --proxy-client-cert-file
// certificate, issued by --requestheader-client-ca-file, carrying the user in X-Remote-* headers)
// and authorizes the user with a SubjectAccessReview.
type frontProxy struct {
	client  kubernetes.Interface
	refresh time.Duration

	mu       sync.Mutex
	loadedAt time.Time
	cfg      *requestHeaderConfig
	loadErr  error
}

type requestHeaderConfig struct {
	pool          *x509.CertPool
	allowedNames  []string
	userHeaders   []string
	groupHeaders  []string
	extraPrefixes []string
}

// caller is an authenticated user.
type caller struct {
	User   string
	Groups []string
	Extra  map[string][]string
}

// config returns the request-header settings, read from the configmap at most every refresh.
func (f *frontProxy) config(ctx context.Context) (*requestHeaderConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loadedAt.IsZero() && time.Since(f.loadedAt) < f.refresh {
		return f.cfg, f.loadErr
	}
	cfg, err := f.load(ctx)
	f.loadedAt = time.Now()
	if err != nil && f.cfg != nil {
		return f.cfg, nil // keep serving with the last good settings
	}
	f.cfg, f.loadErr = cfg, err
	return cfg, err
}

func (f *frontProxy) load(ctx context.Context) (*requestHeaderConfig, error) {
	cm, err := f.client.CoreV1().ConfigMaps(authConfigMapNamespace).Get(ctx, authConfigMapName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading configmap %s/%s: %w", authConfigMapNamespace, authConfigMapName, err)
	}
	return parseRequestHeaderConfig(cm)
}

func parseRequestHeaderConfig(cm *corev1.ConfigMap) (*requestHeaderConfig, error) {
	where := authConfigMapNamespace + "/" + authConfigMapName
	caPEM := cm.Data["requestheader-client-ca-file"]
	if caPEM == "" {
		return nil, fmt.Errorf("configmap %s has no requestheader-client-ca-file: start the kube-apiserver with --requestheader-client-ca-file and --proxy-client-cert-file (API aggregation)", where)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, fmt.Errorf("configmap %s: requestheader-client-ca-file holds no PEM certificate", where)
	}
	c := &requestHeaderConfig{pool: pool}
	for key, dst := range map[string]*[]string{
		"requestheader-allowed-names":        &c.allowedNames,
		"requestheader-username-headers":     &c.userHeaders,
		"requestheader-group-headers":        &c.groupHeaders,
		"requestheader-extra-headers-prefix": &c.extraPrefixes,
	} {
		if v := cm.Data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), dst); err != nil {
				return nil, fmt.Errorf("configmap %s: %s is not a JSON list of strings: %w", where, key, err)
			}
		}
	}
	if len(c.userHeaders) == 0 {
		c.userHeaders = []string{"X-Remote-User"}
	}
	if len(c.groupHeaders) == 0 {
		c.groupHeaders = []string{"X-Remote-Group"}
	}
	if len(c.extraPrefixes) == 0 {
		c.extraPrefixes = []string{"X-Remote-Extra-"}
	}
	return c, nil
}

// authError is a refusal with its HTTP status.
type authError struct {
	code int
	msg  string
}

func (e *authError) Error() string { return e.msg }

func unauthorized(format string, args ...any) error {
	return &authError{code: http.StatusUnauthorized, msg: fmt.Sprintf(format, args...)}
}

// authenticate checks the client certificate against the front-proxy CA and allowed names and
// returns the user the headers name.
func (f *frontProxy) authenticate(r *http.Request) (*caller, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, unauthorized("no client certificate: metrics.k8s.io is served to the kube-apiserver's front proxy (its --proxy-client-cert-file); call it through the API server")
	}
	cfg, err := f.config(r.Context())
	if err != nil {
		return nil, unauthorized("cannot authenticate the front proxy: %v", err)
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: cfg.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, unauthorized("client certificate %q is not from the requestheader client CA: %v", leaf.Subject.CommonName, err)
	}
	if len(cfg.allowedNames) > 0 && !slices.Contains(cfg.allowedNames, leaf.Subject.CommonName) {
		return nil, unauthorized("client certificate %q is not in requestheader-allowed-names %v", leaf.Subject.CommonName, cfg.allowedNames)
	}
	c := &caller{Extra: map[string][]string{}}
	for _, h := range cfg.userHeaders {
		if v := r.Header.Get(h); v != "" {
			c.User = v
			break
		}
	}
	if c.User == "" {
		return nil, unauthorized("front-proxy request names no user (headers %v)", cfg.userHeaders)
	}
	for _, h := range cfg.groupHeaders {
		c.Groups = append(c.Groups, r.Header.Values(h)...)
	}
	for name, vs := range r.Header {
		for _, p := range cfg.extraPrefixes {
			if len(name) > len(p) && strings.EqualFold(name[:len(p)], p) {
				key := strings.ToLower(name[len(p):])
				c.Extra[key] = append(c.Extra[key], vs...)
			}
		}
	}
	return c, nil
}

// authorize asks the API server whether c may verb resource (in namespace, named name) of
// metrics.k8s.io.
func (f *frontProxy) authorize(ctx context.Context, c *caller, verb, resource, namespace, name string) error {
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range c.Extra {
		extra[k] = v
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: c.User, Groups: c.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: metricsGroup, Version: metricsVersion,
			Resource: resource, Namespace: namespace, Name: name},
	}}
	res, err := f.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return &authError{code: http.StatusInternalServerError, msg: fmt.Sprintf("authorizing %s: SubjectAccessReview failed: %v", c.User, err)}
	}
	if !res.Status.Allowed {
		what := resource + "." + metricsGroup
		if name != "" {
			what += " " + name
		}
		scope := "at the cluster scope"
		if namespace != "" {
			scope = "in the namespace " + namespace
		}
		msg := fmt.Sprintf("user %q cannot %s %s %s", c.User, verb, what, scope)
		if res.Status.Reason != "" {
			msg += ": " + res.Status.Reason
		}
		return &authError{code: http.StatusForbidden, msg: msg}
	}
	return nil
}

func asAuthError(err error) (*authError, bool) {
	var ae *authError
	ok := errors.As(err, &ae)
	return ae, ok
}
