package cloudstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubectl top across replicas. Each replica scrapes only the nodes whose stream tunnels it holds, but
// the APIService sends every metrics.k8s.io request to one replica (whichever the Service reaches).
// So, with forward enabled, the replica serving a request — after authenticating the front proxy and
// checking the user with a SubjectAccessReview, as for a local answer — also asks every other live
// replica (from the replicas' Leases, over the replicas' mTLS) for the usage it holds, and answers
// with the union: a node or pod held by any replica is in every replica's answer. Labels and field
// selectors are applied by the replica serving the request, once, after the merge. A replica that
// does not answer within forward.dialTimeout is left out of that answer (logged, counted as
// kedge_cloudstream_metrics_peer_queries_total{result="error"}); its nodes come back when it does.
// When a node moved and two replicas still have a usage for it, the newer one wins.

// peerMetricsPath is the forward server's path of a replica's own usage: /metricsapi/nodes or
// /metricsapi/pods, with query name= (and namespace= for pods).
const peerMetricsPath = "/metricsapi/"

// localNodes is this replica's usage of its nodes, one node when name is set (no labels).
func (a *metricsAPI) localNodes(name string) []nodeMetrics {
	names := a.store.nodeNames()
	if name != "" {
		names = []string{name}
	}
	var out []nodeMetrics
	for _, n := range names {
		u, ok := a.store.nodeUsage(n)
		if !ok {
			continue
		}
		out = append(out, nodeMetrics{TypeMeta: typeMeta("NodeMetrics"), ObjectMeta: objectMeta(n, ""),
			Timestamp: timeOf(u.At), Window: durationOf(u.Window), Usage: resources(u)})
	}
	return out
}

// localPods is this replica's usage of pods in namespace ("" all), one pod when name is set (no labels).
func (a *metricsAPI) localPods(namespace, name string) []podMetrics {
	var out []podMetrics
	for _, p := range a.store.pods() {
		if namespace != "" && p.Namespace != namespace || name != "" && p.Pod != name {
			continue
		}
		pm := podMetrics{TypeMeta: typeMeta("PodMetrics"), ObjectMeta: objectMeta(p.Pod, p.Namespace),
			Timestamp: timeOf(p.At), Window: durationOf(p.Window)}
		for _, c := range p.Containers {
			pm.Containers = append(pm.Containers, containerMetrics{Name: c.Name, Usage: resources(c.usage)})
		}
		out = append(out, pm)
	}
	return out
}

// allNodes is localNodes merged with every other replica's (when forwarding is on and this request
// did not come from a replica).
func (a *metricsAPI) allNodes(ctx context.Context, name string) []nodeMetrics {
	items := a.localNodes(name)
	for _, b := range a.askPeers(ctx, "nodes", url.Values{"name": {name}}) {
		var l nodeMetricsList
		if err := json.Unmarshal(b, &l); err != nil {
			a.m.host.Logger().Warn("metricsAPI: a replica's node usage is not a NodeMetricsList", "err", err)
			continue
		}
		items = append(items, l.Items...)
	}
	newest := map[string]nodeMetrics{}
	for _, it := range items {
		if cur, ok := newest[it.Name]; !ok || it.Timestamp.After(cur.Timestamp.Time) {
			newest[it.Name] = it
		}
	}
	out := make([]nodeMetrics, 0, len(newest))
	for _, it := range newest {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// allPods is localPods merged with every other replica's.
func (a *metricsAPI) allPods(ctx context.Context, namespace, name string) []podMetrics {
	items := a.localPods(namespace, name)
	for _, b := range a.askPeers(ctx, "pods", url.Values{"namespace": {namespace}, "name": {name}}) {
		var l podMetricsList
		if err := json.Unmarshal(b, &l); err != nil {
			a.m.host.Logger().Warn("metricsAPI: a replica's pod usage is not a PodMetricsList", "err", err)
			continue
		}
		items = append(items, l.Items...)
	}
	newest := map[[2]string]podMetrics{}
	for _, it := range items {
		k := [2]string{it.Namespace, it.Name}
		if cur, ok := newest[k]; !ok || it.Timestamp.After(cur.Timestamp.Time) {
			newest[k] = it
		}
	}
	out := make([]podMetrics, 0, len(newest))
	for _, it := range newest {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// askPeers gets resource's usage from every other replica at once, within forward.dialTimeout, and
// returns the answers that came (nil without forwarding). No loop: a replica answers these from its
// own store only (serveUsage).
func (a *metricsAPI) askPeers(ctx context.Context, resource string, q url.Values) [][]byte {
	f := a.m.fwd
	if f == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	defer cancel()
	ps, err := f.peers(ctx)
	if err != nil {
		f.peerQueries.WithLabelValues("error").Inc()
		a.m.host.Logger().Warn("metricsAPI: listing the other replicas failed; answering with this replica's nodes only", "err", err)
		return nil
	}
	var mu sync.Mutex
	var out [][]byte
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			b, err := f.peerUsage(ctx, p, resource, q)
			if err != nil {
				f.peerQueries.WithLabelValues("error").Inc()
				a.m.host.Logger().Warn("metricsAPI: a replica did not give its usage; its nodes are missing from this answer",
					"replica", p.identity, "err", err)
				return
			}
			f.peerQueries.WithLabelValues("ok").Inc()
			mu.Lock()
			out = append(out, b)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (f *forwarder) peerUsage(ctx context.Context, p peer, resource string, q url.Values) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.address+peerMetricsPath+resource+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxStatsBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// serveUsage answers another replica's /metricsapi/<resource>: this replica's own usage, unfiltered
// by labels (the asking replica applies them). The caller is a replica (checked by serve).
func (f *forwarder) serveUsage(w http.ResponseWriter, r *http.Request, resource string) {
	a := f.m.mapi
	if a == nil {
		http.Error(w, "the metrics API is not enabled on replica "+f.cfg.Identity, http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	switch resource {
	case "nodes":
		writeJSON(w, http.StatusOK, &nodeMetricsList{TypeMeta: typeMeta("NodeMetricsList"), Items: a.localNodes(q.Get("name"))})
	case "pods":
		writeJSON(w, http.StatusOK, &podMetricsList{TypeMeta: typeMeta("PodMetricsList"), Items: a.localPods(q.Get("namespace"), q.Get("name"))})
	default:
		http.Error(w, fmt.Sprintf("%s%s: not a usage resource (nodes, pods)", peerMetricsPath, resource), http.StatusNotFound)
	}
}

func typeMeta(kind string) metav1.TypeMeta { return metav1.TypeMeta{Kind: kind, APIVersion: metricsGV} }

func objectMeta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, CreationTimestamp: metav1.NewTime(time.Now())}
}

func timeOf(t time.Time) metav1.Time { return metav1.NewTime(t) }

func durationOf(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }
