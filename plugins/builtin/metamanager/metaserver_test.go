package metamanager

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

func clientFor(t *testing.T, e *edge) *kubernetes.Clientset {
	t.Helper()
	addr := e.mm.MetaServerAddr()
	if addr == "" {
		t.Fatal("the metaserver is not bound")
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + addr, QPS: 1000, Burst: 1000, BearerToken: e.adminToken(t)})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// offlineHub refuses every query as edgehub does while the link is down.
func offlineHub() *fakeHub {
	return &fakeHub{answer: func(context.Context, sdk.Message) (sdk.Message, error) {
		return sdk.Message{}, errors.New("offline: answered only from the edge's store")
	}}
}

func TestMetaServerAnswersClientGo(t *testing.T) {
	e := newEdge(t, offlineHub())
	e.cloud(t, message.OpInsert, "default/pod/web", pod("default", "web", 11, "edge-1", map[string]string{"app": "web"}))
	e.cloud(t, message.OpInsert, "default/pod/db", pod("default", "db", 12, "edge-2", map[string]string{"app": "db"}))
	e.cloud(t, message.OpInsert, "kube-system/pod/dns", pod("kube-system", "dns", 13, "edge-1", nil))
	e.cloud(t, message.OpInsert, "default/configmap/settings", configMap("default", "settings", 14, map[string]string{"k": "v"}))
	e.cloud(t, message.OpInsert, "default/node/edge-1", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", ResourceVersion: "15"}})
	cs := clientFor(t, e)
	ctx := context.Background()

	names := func(items []corev1.Pod) string {
		var s []string
		for _, p := range items {
			s = append(s, p.Namespace+"/"+p.Name)
		}
		return strings.Join(s, ",")
	}
	lists := []struct {
		name, ns string
		opts     metav1.ListOptions
		want     string
	}{
		{"all namespaces", "", metav1.ListOptions{}, "default/db,default/web,kube-system/dns"},
		{"one namespace", "default", metav1.ListOptions{}, "default/db,default/web"},
		{"label selector", "", metav1.ListOptions{LabelSelector: "app=web"}, "default/web"},
		{"field selector spec.nodeName", "", metav1.ListOptions{FieldSelector: "spec.nodeName=edge-1"}, "default/web,kube-system/dns"},
		{"field selector metadata.name", "default", metav1.ListOptions{FieldSelector: "metadata.name=db"}, "default/db"},
	}
	for _, tt := range lists {
		t.Run("list pods, "+tt.name, func(t *testing.T) {
			l, err := cs.CoreV1().Pods(tt.ns).List(ctx, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(l.Items); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if l.ResourceVersion == "" {
				t.Fatal("list has no resourceVersion")
			}
		})
	}

	t.Run("get keeps the cloud's resourceVersion", func(t *testing.T) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.ResourceVersion != "11" || p.Spec.NodeName != "edge-1" || p.Labels["app"] != "web" {
			t.Fatalf("got %+v", p)
		}
	})
	t.Run("items carry kind and apiVersion", func(t *testing.T) { // typed clients drop them after decoding: read raw JSON
		resp := e.get(t, "/api/v1/namespaces/default/configmaps", e.adminToken(t))
		defer resp.Body.Close()
		var l struct {
			Kind, APIVersion string
			Items            []struct{ Kind, APIVersion string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			t.Fatal(err)
		}
		if l.Kind != "ConfigMapList" || l.APIVersion != "v1" || len(l.Items) != 1 || l.Items[0].Kind != "ConfigMap" || l.Items[0].APIVersion != "v1" {
			t.Fatalf("got %+v", l)
		}
	})
	t.Run("configmaps get and list", func(t *testing.T) {
		c, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "settings", metav1.GetOptions{})
		if err != nil || c.Data["k"] != "v" {
			t.Fatalf("got %+v %v", c, err)
		}
		l, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 1 || l.Items[0].Kind != "ConfigMap" {
			t.Fatalf("got %+v %v", l, err)
		}
	})
	t.Run("nodes are cluster-scoped", func(t *testing.T) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "edge-1", metav1.GetOptions{})
		if err != nil || n.Name != "edge-1" {
			t.Fatalf("got %+v %v", n, err)
		}
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 1 {
			t.Fatalf("got %+v %v", l, err)
		}
	})
	t.Run("a missing object is NotFound", func(t *testing.T) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "nope", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("got %v, want NotFound", err)
		}
		_, err = cs.CoreV1().Secrets("default").Get(ctx, "nope", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("got %v, want NotFound", err)
		}
	})
	t.Run("a write is refused with 405", func(t *testing.T) {
		_, err := cs.CoreV1().Pods("default").Create(ctx, pod("default", "new", 0, "", nil), metav1.CreateOptions{})
		if !apierrors.IsMethodNotSupported(err) {
			t.Fatalf("got %v, want MethodNotAllowed", err)
		}
		err = cs.CoreV1().ConfigMaps("default").Delete(ctx, "settings", metav1.DeleteOptions{})
		if !apierrors.IsMethodNotSupported(err) {
			t.Fatalf("got %v, want MethodNotAllowed", err)
		}
	})
	t.Run("an unsupported field selector is a bad request", func(t *testing.T) {
		_, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{FieldSelector: "data.k=v"})
		if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "data.k") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("discovery", func(t *testing.T) {
		rl, err := cs.Discovery().ServerResourcesForGroupVersion("v1")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rl.APIResources {
			got = append(got, r.Name)
		}
		if strings.Join(got, ",") != "pods,configmaps,secrets,services,nodes" {
			t.Fatalf("resources %v", got)
		}
	})
}

func TestWatchFromAnExpiredVersionGets410(t *testing.T) {
	e := newEdge(t, offlineHub())
	cs := clientFor(t, e)
	w, err := cs.CoreV1().Pods("").Watch(context.Background(), metav1.ListOptions{ResourceVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ev := <-w.ResultChan()
	if ev.Type != watch.Error {
		t.Fatalf("event %s %v, want ERROR", ev.Type, ev.Object)
	}
	if err := apierrors.FromObject(ev.Object); !apierrors.IsResourceExpired(err) || apierrors.ReasonForError(err) != metav1.StatusReasonExpired {
		t.Fatalf("got %v, want 410 Expired", err)
	}
}

func TestWatchStreamsChangesAfterAList(t *testing.T) {
	e := newEdge(t, offlineHub())
	e.cloud(t, message.OpInsert, "default/pod/a", pod("default", "a", 5, "edge-1", nil))
	l, err := clientFor(t, e).CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.cloud(t, message.OpUpdate, "default/pod/a", pod("default", "a", 6, "edge-1", map[string]string{"v": "2"}))
	e.cloud(t, message.OpInsert, "default/pod/b", pod("default", "b", 7, "edge-1", nil))
	e.cloud(t, message.OpDelete, "default/pod/a", pod("default", "a", 8, "edge-1", nil))

	// A raw stream: newline-delimited watch events, replayed from the list's resourceVersion.
	resp := e.get(t, "/api/v1/namespaces/default/pods?watch=1&resourceVersion="+l.ResourceVersion, e.adminToken(t))
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	want := []string{"MODIFIED a", "ADDED b", "DELETED a"}
	var last uint64
	for i, w := range want {
		if !sc.Scan() {
			t.Fatalf("stream ended before event %d: %v", i, sc.Err())
		}
		var ev struct {
			Type   string
			Object corev1.Pod
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		if got := ev.Type + " " + ev.Object.Name; got != w {
			t.Fatalf("event %d = %s, want %s", i, got, w)
		}
		var seq uint64
		if err := json.Unmarshal([]byte(ev.Object.ResourceVersion), &seq); err != nil || seq <= last {
			t.Fatalf("event %d resourceVersion %q does not follow %d", i, ev.Object.ResourceVersion, last)
		}
		last = seq
	}
}

// podEvents records what an informer's handler is told.
type podEvents struct {
	mu  sync.Mutex
	got []string
}

func (p *podEvents) add(s string) { p.mu.Lock(); p.got = append(p.got, s); p.mu.Unlock() }
func (p *podEvents) has(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.got {
		if g == s {
			return true
		}
	}
	return false
}

func startPodInformer(t *testing.T, cs kubernetes.Interface) (*podEvents, cache.SharedIndexInformer) {
	t.Helper()
	ev := &podEvents{}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { ev.add("add " + o.(*corev1.Pod).Name) },
		UpdateFunc: func(_, o any) {
			p := o.(*corev1.Pod)
			ev.add("update " + p.Name + " " + p.Labels["v"])
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			ev.add("delete " + o.(*corev1.Pod).Name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	return ev, inf
}

func TestInformerFollowsChangesSentThroughMetamanager(t *testing.T) {
	e := newEdge(t, offlineHub())
	e.cloud(t, message.OpInsert, "default/pod/before", pod("default", "before", 3, "edge-1", nil))
	ev, inf := startPodInformer(t, clientFor(t, e))
	if !ev.has("add before") {
		t.Fatal("the synced informer does not hold the stored pod")
	}
	e.cloud(t, message.OpInsert, "default/pod/p", pod("default", "p", 10, "edge-1", map[string]string{"v": "1"}))
	eventually(t, "informer sees the insert", func() bool { return ev.has("add p") })
	e.cloud(t, message.OpUpdate, "default/pod/p", pod("default", "p", 11, "edge-1", map[string]string{"v": "2"}))
	eventually(t, "informer sees the update", func() bool { return ev.has("update p 2") })
	e.cloud(t, message.OpDelete, "default/pod/p", pod("default", "p", 12, "edge-1", map[string]string{"v": "2"}))
	eventually(t, "informer sees the delete", func() bool { return ev.has("delete p") })
	if _, exists, _ := inf.GetStore().GetByKey("default/p"); exists {
		t.Fatal("deleted pod still in the informer's cache")
	}
}

func TestStateSurvivesRestartAndInformerRelists(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "edge.db")
	e := startEdge(t, dbPath, "127.0.0.1:0", offlineHub())
	addr := e.mm.MetaServerAddr()
	e.cloud(t, message.OpInsert, "default/pod/a", pod("default", "a", 20, "edge-1", nil))
	e.cloud(t, message.OpInsert, "default/configmap/c", configMap("default", "c", 21, map[string]string{"k": "v"}))
	cs := clientFor(t, e)
	ev, _ := startPodInformer(t, cs)
	// A change while the informer watches, so its watch has carried an event of this process.
	e.cloud(t, message.OpInsert, "default/pod/a2", pod("default", "a2", 22, "edge-1", nil))
	eventually(t, "informer sees a2", func() bool { return ev.has("add a2") })

	e.stop()
	// The same file and address, and no cloud: everything is served from SQLite.
	e2 := startEdge(t, dbPath, addr, offlineHub())
	eventually(t, "the restarted metaserver is bound", func() bool { return e2.mm.MetaServerAddr() == addr })
	ctx := context.Background()
	if p, err := cs.CoreV1().Pods("default").Get(ctx, "a", metav1.GetOptions{}); err != nil || p.ResourceVersion != "20" {
		t.Fatalf("after restart: %+v %v", p, err)
	}
	if c, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "c", metav1.GetOptions{}); err != nil || c.Data["k"] != "v" {
		t.Fatalf("after restart: %+v %v", c, err)
	}
	if resp := e2.send(t, "edged", message.OpQuery, "default/pod/a", "", nil); resp.Route.Operation != message.OpResponse {
		t.Fatalf("query after restart: %s", resp.Content)
	}

	// The informer's watch resumes from a version of the previous process: 410, then it lists again
	// and follows the new process's changes.
	e2.cloud(t, message.OpInsert, "default/pod/b", pod("default", "b", 23, "edge-1", nil))
	eventually(t, "informer sees a pod added after the restart", func() bool { return ev.has("add b") })
	eventually(t, "the old resourceVersion was refused with 410", func() bool { return metricValue(t, e2, "kedge_metaserver_watch_expired_total") > 0 })
}

func metricValue(t *testing.T, e *edge, name string) float64 {
	t.Helper()
	fams, err := e.mgr.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			sum := 0.0
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return sum
		}
	}
	return 0
}
