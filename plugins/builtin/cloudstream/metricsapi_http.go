package cloudstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	metricsGroup   = "metrics.k8s.io"
	metricsVersion = "v1beta1"
	metricsGV      = metricsGroup + "/" + metricsVersion
)

// The JSON shapes of k8s.io/metrics' v1beta1 types (that module is not a dependency).
type nodeMetrics struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Timestamp         metav1.Time         `json:"timestamp"`
	Window            metav1.Duration     `json:"window"`
	Usage             corev1.ResourceList `json:"usage"`
}

type nodeMetricsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []nodeMetrics `json:"items"`
}

type containerMetrics struct {
	Name  string              `json:"name"`
	Usage corev1.ResourceList `json:"usage"`
}

type podMetrics struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Timestamp         metav1.Time        `json:"timestamp"`
	Window            metav1.Duration    `json:"window"`
	Containers        []containerMetrics `json:"containers"`
}

type podMetricsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []podMetrics `json:"items"`
}

func resources(u usage) corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewScaledQuantity(u.NanoCores, resource.Nano),
		corev1.ResourceMemory: *resource.NewQuantity(int64(u.Memory), resource.BinarySI),
	}
}

// scrapeMetrics are the metrics API's own Prometheus metrics.
type scrapeMetrics struct {
	results  *prometheus.CounterVec
	duration prometheus.Histogram
	requests *prometheus.CounterVec
}

func newScrapeMetrics() *scrapeMetrics {
	return &scrapeMetrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_metrics_scrapes_total",
			Help: "Resource metrics scrapes of nodes, by result (ok, error, skipped_busy)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_cloudstream_metrics_scrape_seconds",
			Help: "Duration of one node's resource metrics scrape.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_metrics_api_requests_total",
			Help: "Requests to metrics.k8s.io, by resource and HTTP code."}, []string{"resource", "code"}),
	}
}

func (s *scrapeMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{s.results, s.duration, s.requests} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func hasAddress(addrs []corev1.NodeAddress, a string) bool {
	for _, x := range addrs {
		if x.Address == a {
			return true
		}
	}
	return false
}

// request is a parsed metrics.k8s.io path.
type request struct {
	resource  string // "", "nodes" or "pods"; "" with discovery set
	discovery string // "apis", "group", "version"
	namespace string
	name      string
}

func parseMetricsPath(p string) (request, error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 0 || parts[0] != "apis" {
		return request{}, fmt.Errorf("%s is not served here (only /apis/%s)", p, metricsGV)
	}
	switch {
	case len(parts) == 1:
		return request{discovery: "apis"}, nil
	case parts[1] != metricsGroup:
		return request{}, fmt.Errorf("group %q is not served here (only %s)", parts[1], metricsGroup)
	case len(parts) == 2:
		return request{discovery: "group"}, nil
	case parts[2] != metricsVersion:
		return request{}, fmt.Errorf("version %q of %s is not served here (only %s)", parts[2], metricsGroup, metricsVersion)
	case len(parts) == 3:
		return request{discovery: "version"}, nil
	}
	rest := parts[3:]
	switch {
	case rest[0] == "nodes" && len(rest) <= 2:
		r := request{resource: "nodes"}
		if len(rest) == 2 {
			r.name = rest[1]
		}
		return r, nil
	case rest[0] == "pods" && len(rest) == 1:
		return request{resource: "pods"}, nil
	case rest[0] == "namespaces" && len(rest) >= 3 && len(rest) <= 4 && rest[2] == "pods" && rest[1] != "":
		r := request{resource: "pods", namespace: rest[1]}
		if len(rest) == 4 {
			r.name = rest[3]
		}
		return r, nil
	}
	return request{}, fmt.Errorf("%s is not a %s resource path (want nodes, nodes/{name}, pods, namespaces/{namespace}/pods[/{name}])", p, metricsGV)
}

// writeStatus writes a metav1.Status error as the API server would.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *metricsAPI) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &codeRecorder{ResponseWriter: w, code: http.StatusOK}
	res := "discovery"
	defer func() { a.scrapes.requests.WithLabelValues(res, fmt.Sprint(rec.code)).Inc() }()
	w = rec
	if r.URL.Path == "/healthz" || r.URL.Path == "/livez" || r.URL.Path == "/readyz" {
		res = "health"
		_, _ = w.Write([]byte("ok"))
		return
	}
	c, err := a.auth.authenticate(r)
	if err != nil {
		ae, _ := asAuthError(err)
		a.m.host.Logger().Info("metrics API request refused", "code", ae.code, "path", r.URL.Path, "err", ae.msg)
		writeStatus(w, ae.code, metav1.StatusReasonUnauthorized, ae.msg)
		return
	}
	req, err := parseMetricsPath(r.URL.Path)
	if err != nil {
		res = "unknown"
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, err.Error())
		return
	}
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			fmt.Sprintf("%s is read-only: only GET (get, list) is served, not %s", metricsGV, r.Method))
		return
	}
	if req.discovery != "" {
		a.serveDiscovery(w, req.discovery)
		return
	}
	res = req.resource
	q := r.URL.Query()
	if q.Get("watch") == "true" || q.Get("watch") == "1" {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "watch is not supported by "+metricsGV)
		return
	}
	verb := "list"
	if req.name != "" {
		verb = "get"
	}
	if err := a.auth.authorize(r.Context(), c, verb, req.resource, req.namespace, req.name); err != nil {
		ae, _ := asAuthError(err)
		reason := metav1.StatusReasonForbidden
		if ae.code != http.StatusForbidden {
			reason = metav1.StatusReasonInternalError
		}
		a.m.host.Logger().Info("metrics API request refused", "code", ae.code, "user", c.User, "err", ae.msg)
		writeStatus(w, ae.code, reason, ae.msg)
		return
	}
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("labelSelector %q: %v", q.Get("labelSelector"), err))
		return
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("fieldSelector %q: %v", q.Get("fieldSelector"), err))
		return
	}
	if req.resource == "nodes" {
		a.serveNodes(w, r, req, ls, fs)
		return
	}
	a.servePods(w, r, req, ls, fs)
}

type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) { c.code = code; c.ResponseWriter.WriteHeader(code) }

func (a *metricsAPI) serveDiscovery(w http.ResponseWriter, what string) {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: metricsGV, Version: metricsVersion}
	group := metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: metricsGroup,
		Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv}
	switch what {
	case "apis":
		writeJSON(w, http.StatusOK, &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{group}})
	case "group":
		writeJSON(w, http.StatusOK, &group)
	default:
		writeJSON(w, http.StatusOK, &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: metricsGV, APIResources: []metav1.APIResource{
				{Name: "nodes", Namespaced: false, Kind: "NodeMetrics", Verbs: metav1.Verbs{"get", "list"}},
				{Name: "pods", Namespaced: true, Kind: "PodMetrics", Verbs: metav1.Verbs{"get", "list"}},
			}})
	}
}

func (a *metricsAPI) serveNodes(w http.ResponseWriter, r *http.Request, req request, ls labels.Selector, fs fields.Selector) {
	var nodeLabels map[string]map[string]string // nil: no label selector given
	if !ls.Empty() {
		list, err := a.m.client.CoreV1().Nodes().List(r.Context(), metav1.ListOptions{LabelSelector: ls.String()})
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, fmt.Sprintf("listing nodes for labelSelector %q: %v", ls, err))
			return
		}
		nodeLabels = map[string]map[string]string{}
		for _, n := range list.Items {
			nodeLabels[n.Name] = n.Labels
		}
	}
	items := a.allNodes(r.Context(), req.name)
	if req.name != "" {
		if len(items) == 0 {
			writeNotFound(w, "nodes", req.name)
			return
		}
		items[0].Labels = nodeLabels[req.name]
		writeJSON(w, http.StatusOK, &items[0])
		return
	}
	out := nodeMetricsList{TypeMeta: metav1.TypeMeta{Kind: "NodeMetricsList", APIVersion: metricsGV}, Items: []nodeMetrics{}}
	for _, nm := range items {
		if nodeLabels != nil {
			if _, ok := nodeLabels[nm.Name]; !ok {
				continue
			}
		}
		if !fs.Matches(fields.Set{"metadata.name": nm.Name}) {
			continue
		}
		nm.Labels = nodeLabels[nm.Name]
		out.Items = append(out.Items, nm)
	}
	writeJSON(w, http.StatusOK, &out)
}

func writeNotFound(w http.ResponseWriter, res, name string) {
	st := apierrors.NewNotFound(schema.GroupResource{Group: metricsGroup, Resource: res}, name).Status()
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	writeJSON(w, http.StatusNotFound, &st)
}

func (a *metricsAPI) servePods(w http.ResponseWriter, r *http.Request, req request, ls labels.Selector, fs fields.Selector) {
	var podLabels map[[2]string]map[string]string // nil: no label selector given
	if !ls.Empty() {
		list, err := a.m.client.CoreV1().Pods(req.namespace).List(r.Context(), metav1.ListOptions{LabelSelector: ls.String()})
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, fmt.Sprintf("listing pods for labelSelector %q: %v", ls, err))
			return
		}
		podLabels = map[[2]string]map[string]string{}
		for _, p := range list.Items {
			podLabels[[2]string{p.Namespace, p.Name}] = p.Labels
		}
	}
	out := podMetricsList{TypeMeta: metav1.TypeMeta{Kind: "PodMetricsList", APIVersion: metricsGV}, Items: []podMetrics{}}
	for _, pm := range a.allPods(r.Context(), req.namespace, req.name) {
		key := [2]string{pm.Namespace, pm.Name}
		if podLabels != nil {
			if _, ok := podLabels[key]; !ok {
				continue
			}
		}
		if !fs.Matches(fields.Set{"metadata.name": pm.Name, "metadata.namespace": pm.Namespace}) {
			continue
		}
		pm.Labels = podLabels[key]
		out.Items = append(out.Items, pm)
	}
	if req.name != "" {
		if len(out.Items) == 0 {
			writeNotFound(w, "pods", req.name)
			return
		}
		writeJSON(w, http.StatusOK, &out.Items[0])
		return
	}
	writeJSON(w, http.StatusOK, &out)
}
