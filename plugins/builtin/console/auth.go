package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// user is who a token belongs to, as the API server's TokenReview says, and what the views it may
// see (each checked with a SubjectAccessReview).
type user struct {
	Name   string
	Groups []string
	Extra  map[string]authzv1.ExtraValue
	UID    string
	// Views the user may see: list nodes (the fleet), pods (the pod counts), devices, PluginRollouts,
	// Events (a node's recent events) and the ownership Leases (which replica holds a node).
	Nodes, Pods, Devices, Rollouts, Events, Leases bool
}

// access is one resource a view shows.
type access struct {
	group, resource, namespace string
}

var (
	accessNodes    = access{"", "nodes", ""}
	accessPods     = access{"", "pods", ""}
	accessDevices  = access{"devices.kubeedge.io", "devices", ""}
	accessRollouts = access{"kedge.io", "pluginrollouts", ""}
	accessEvents   = access{"", "events", ""}
)

// maxCachedTokens bounds the answers kept (a few hundred bytes each).
const maxCachedTokens = 10000

type cached struct {
	u   *user
	err error
	at  time.Time
}

// authenticator asks the API server who a token is and what it may list, and remembers the answer
// for ttl per token (keyed by the token's sha256, never the token).
type authenticator struct {
	client kubernetes.Interface
	ttl    time.Duration
	leases access // the ownership Leases, in their namespace

	mu    sync.Mutex
	cache map[string]cached
}

func newAuthenticator(c kubernetes.Interface, ttl time.Duration, leaseNamespace string) *authenticator {
	return &authenticator{client: c, ttl: ttl, cache: map[string]cached{}, leases: access{"coordination.k8s.io", "leases", leaseNamespace}}
}

func tokenKey(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// errUnauthenticated is a token the API server does not accept.
type errUnauthenticated struct{ reason string }

func (e errUnauthenticated) Error() string { return "token not accepted: " + e.reason }

// user authenticates token and looks up its views; an unauthenticated token is errUnauthenticated.
func (a *authenticator) user(ctx context.Context, token string) (*user, error) {
	if token == "" {
		return nil, errUnauthenticated{"no token"}
	}
	if len(token) > 16<<10 {
		return nil, errUnauthenticated{"token longer than 16 KiB"}
	}
	k := tokenKey(token)
	now := time.Now()
	a.mu.Lock()
	if c, ok := a.cache[k]; ok && now.Sub(c.at) < a.ttl {
		a.mu.Unlock()
		return c.u, c.err
	}
	for key, c := range a.cache { // keep the cache small: drop expired answers
		if now.Sub(c.at) >= a.ttl {
			delete(a.cache, key)
		}
	}
	a.mu.Unlock()
	u, err := a.review(ctx, token)
	if _, unauth := err.(errUnauthenticated); err == nil || unauth { // API errors are not cached
		a.mu.Lock()
		if len(a.cache) < maxCachedTokens { // a flood of forged tokens cannot grow it without bound
			a.cache[k] = cached{u: u, err: err, at: now}
		}
		a.mu.Unlock()
	}
	return u, err
}

func (a *authenticator) review(ctx context.Context, token string) (*user, error) {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("TokenReview failed: %w", err)
	}
	if !tr.Status.Authenticated {
		reason := tr.Status.Error
		if reason == "" {
			reason = "the API server does not know it"
		}
		return nil, errUnauthenticated{reason}
	}
	u := &user{Name: tr.Status.User.Username, Groups: tr.Status.User.Groups, UID: tr.Status.User.UID, Extra: map[string]authzv1.ExtraValue{}}
	for k, v := range tr.Status.User.Extra {
		u.Extra[k] = authzv1.ExtraValue(v)
	}
	for _, c := range []struct {
		a   access
		dst *bool
	}{{accessNodes, &u.Nodes}, {accessPods, &u.Pods}, {accessDevices, &u.Devices}, {accessRollouts, &u.Rollouts},
		{accessEvents, &u.Events}, {a.leases, &u.Leases}} {
		if *c.dst, err = a.may(ctx, u, "list", c.a, ""); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// may asks with a SubjectAccessReview whether u may verb the resource (in r's namespace, or at the
// cluster scope when it has none; the object name when given).
func (a *authenticator) may(ctx context.Context, u *user, verb string, r access, name string) (bool, error) {
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: u.Name, Groups: u.Groups, UID: u.UID, Extra: u.Extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: r.group, Resource: r.resource, Namespace: r.namespace, Name: name}}}
	res, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SubjectAccessReview for %s %s: %w", verb, r.resource, err)
	}
	return res.Status.Allowed, nil
}

// csrfToken binds a form to the session: an HMAC of the session token under a key of this process.
func csrfToken(key []byte, session string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("console-csrf\x00" + session))
	return hex.EncodeToString(mac.Sum(nil))
}

func validCSRF(key []byte, session, got string) bool {
	return got != "" && hmac.Equal([]byte(csrfToken(key, session)), []byte(got))
}
