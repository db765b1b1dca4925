package edgecontroller

import (
	"context"
	"fmt"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kedge-io/kedge/sdk/message"
)

// TypeToken is the wire type of a pod's service-account tokens.
const TypeToken = "serviceaccounttoken"

// PodTokens is what a node gets for a pod with projected service-account token volumes: one token per
// distinct (audience, expirationSeconds) the pod's volumes ask for, bound to the pod (it dies with
// it). It travels as `<ns>/serviceaccounttoken/<pod name>`; the edge writes each token into the
// volume paths that asked for its audience and expiration.
type PodTokens struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	// PodUID is the pod the tokens are bound to.
	PodUID string  `json:"podUID"`
	Tokens []Token `json:"tokens"`
}

// Token is one bound service-account token.
type Token struct {
	Audience            string      `json:"audience,omitempty"` // empty: the API server's own audience
	ExpirationSeconds   int64       `json:"expirationSeconds"`
	Token               string      `json:"token"`
	ExpirationTimestamp metav1.Time `json:"expirationTimestamp"`
}

// DeepCopyObject makes PodTokens a runtime.Object, so it travels like the API's objects.
func (p *PodTokens) DeepCopyObject() runtime.Object {
	c := *p
	c.ObjectMeta = *p.ObjectMeta.DeepCopy()
	c.Tokens = append([]Token(nil), p.Tokens...)
	return &c
}

var tokenGVK = schema.GroupVersionKind{Group: "edge.kedge.io", Version: "v1", Kind: "PodServiceAccountTokens"}

func init() { gvks[TypeToken] = tokenGVK }

// tokenState is what was last issued for a pod.
type tokenState struct {
	uid       string
	refreshAt time.Time
	obj       *PodTokens
}

type tokenSpec struct {
	audience string
	seconds  int64
}

// tokenSpecs lists the distinct tokens a pod's projected volumes need.
func tokenSpecs(p *corev1.Pod) []tokenSpec {
	seen := map[tokenSpec]bool{}
	var out []tokenSpec
	for _, v := range p.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken == nil {
				continue
			}
			ts := tokenSpec{audience: s.ServiceAccountToken.Audience, seconds: 3600}
			if s.ServiceAccountToken.ExpirationSeconds != nil {
				ts.seconds = *s.ServiceAccountToken.ExpirationSeconds
			}
			if !seen[ts] {
				seen[ts] = true
				out = append(out, ts)
			}
		}
	}
	return out
}

// syncTokens issues (or refreshes, past 80% of their life) the tokens of a pod on an edge node and
// sends them to it. A missing ServiceAccount is reported once as a Warning Event and retried later.
func (m *Module) syncTokens(ctx context.Context, node string, pod *corev1.Pod) {
	specs := tokenSpecs(pod)
	key := pod.Namespace + "/" + pod.Name
	if len(specs) == 0 || m.isKubeEdge(node) { // KubeEdge's edged asks for each token itself (kubeedge_extra.go)
		return
	}
	m.mu.Lock()
	st, ok := m.tokens[key]
	m.mu.Unlock()
	if ok && st.uid == string(pod.UID) && time.Now().Before(st.refreshAt) {
		return
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	obj := &PodTokens{TypeMeta: metav1.TypeMeta{APIVersion: tokenGVK.GroupVersion().String(), Kind: tokenGVK.Kind}, ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}, PodUID: string(pod.UID)}
	refresh := time.Time{}
	for _, s := range specs {
		secs := s.seconds
		req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}
		if s.audience != "" {
			req.Spec.Audiences = []string{s.audience}
		}
		resp, err := m.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				m.reportMissing(pod, objKey{Type: "serviceaccount", Namespace: pod.Namespace, Name: sa})
			} else {
				m.host.Logger().Warn("service-account token not issued", "pod", key, "serviceAccount", sa, "err", err)
			}
			m.metrics.syncErrors.WithLabelValues(TypeToken).Inc()
			m.mu.Lock()
			m.tokens[key] = tokenState{uid: string(pod.UID), refreshAt: time.Now().Add(m.TokenRetry), obj: st.obj}
			m.mu.Unlock()
			return
		}
		exp := resp.Status.ExpirationTimestamp
		obj.Tokens = append(obj.Tokens, Token{Audience: s.audience, ExpirationSeconds: secs, Token: resp.Status.Token, ExpirationTimestamp: exp})
		at := time.Now().Add(time.Until(exp.Time) * 8 / 10)
		if refresh.IsZero() || at.Before(refresh) {
			refresh = at
		}
	}
	m.mu.Lock()
	m.tokens[key] = tokenState{uid: string(pod.UID), refreshAt: refresh, obj: obj}
	m.mu.Unlock()
	m.emit(ctx, node, message.OpUpdate, TypeToken, pod.Namespace, pod.Name, obj)
}

// dropTokens forgets a pod's tokens and removes them from the node that had them.
func (m *Module) dropTokens(ctx context.Context, node, ns, name string) {
	key := ns + "/" + name
	m.mu.Lock()
	_, ok := m.tokens[key]
	delete(m.tokens, key)
	m.mu.Unlock()
	if ok {
		m.emit(ctx, node, message.OpDelete, TypeToken, ns, name, nil)
	}
}

// refreshTokens requeues pods whose tokens are due.
func (m *Module) refreshTokens() {
	now := time.Now()
	m.mu.Lock()
	var due []string
	for key, st := range m.tokens {
		if now.After(st.refreshAt) {
			due = append(due, key)
		}
	}
	m.mu.Unlock()
	for _, key := range due {
		var ns, name string
		if _, err := fmt.Sscanf(replaceSlash(key), "%s %s", &ns, &name); err == nil {
			m.ctl.Queue.Add(item{Type: TypePod, Namespace: ns, Name: name})
		}
	}
}

func replaceSlash(s string) string {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i] + " " + s[i+1:]
		}
	}
	return s
}

// tokensFor returns the tokens last issued for a pod (for an inventory reconciliation).
func (m *Module) tokensFor(ns, name string) *PodTokens {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokens[ns+"/"+name].obj
}
