package controller

import (
	"strconv"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/kube"
)

// API is the settings of a controller's API client: the keys kubeconfig, qps and burst. Embed it
// first in the module's settings, inline:
//
//	type Module struct {
//		controller.API `yaml:",inline"`
//		Workers int    `yaml:"workers" doc:"..."`
//	}
type API struct {
	Kubeconfig string  `yaml:"kubeconfig" doc:"Path of the kubeconfig for the API server; empty: $KUBECONFIG, else the in-cluster service account." cfg:"min"`
	QPS        float32 `yaml:"qps" doc:"Requests per second to the API server, sustained."`
	Burst      int     `yaml:"burst" doc:"Requests to the API server above qps at once."`
}

// Check adds the problems of the settings to c (qps and burst must be positive).
func (a API) Check(c *sdk.SettingChecks) {
	c.Check(a.QPS > 0, "qps", "must be positive, got %v", a.QPS)
	c.Check(a.Burst > 0, "burst", "must be positive, got %d", a.Burst)
}

// RestConfig finds the API server for module (kube.RestConfig with the setting
// modules.<module>.kubeconfig) and sets the rate limits and the user agent kedge-<module>.
func (a API) RestConfig(module string) (*rest.Config, error) {
	cfg, err := kube.RestConfig(a.Kubeconfig, "modules."+module+".kubeconfig")
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = a.QPS, a.Burst, "kedge-"+module
	return cfg, nil
}

// NewScheme returns a scheme holding the types add registers (and the meta types a REST client
// needs); it panics when add fails, which is a programming error.
func NewScheme(add func(*runtime.Scheme) error) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := add(s); err != nil {
		panic(err)
	}
	return s
}

// WithObject returns msg with a copy of obj as its content, its kind set to gvk (the edge decodes by
// it), and the header's resourceVersion set to obj's when that is a number (the edge compares them).
func WithObject(msg sdk.Message, obj runtime.Object, gvk schema.GroupVersionKind) (sdk.Message, error) {
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	if o, ok := obj.(interface{ GetResourceVersion() string }); ok {
		if rv, err := strconv.ParseUint(o.GetResourceVersion(), 10, 64); err == nil && rv != 0 {
			msg.Header.ResourceVersion = o.GetResourceVersion()
		}
	}
	return msg.WithContent(obj)
}

// Informer returns a shared index informer on every object of resource (all namespaces) through
// client, a REST client of its group (NewRESTClient); obj is the type.
func Informer(client cache.Getter, resource string, obj runtime.Object, indexers cache.Indexers) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(cache.NewListWatchFromClient(client, resource, "", fields.Everything()), obj, 0, indexers)
}

// NewRESTClient returns a typed REST client for the group version gv of a custom resource on base:
// JSON, scheme's types, and base's rate limits.
func NewRESTClient(base *rest.Config, gv schema.GroupVersion, scheme *runtime.Scheme) (*rest.RESTClient, error) {
	cfg := rest.CopyConfig(base)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	return rest.RESTClientFor(cfg)
}

// Info is the registration of a cloud controller named name: its group is hubevents (so cloudhub
// tells it when a node connects, disconnects and sends its inventory), it starts after cloudhub, and
// it is disabled by default (it needs a kube-apiserver, and its CRDs if it has any: enable it with a
// kubeconfig, or in a cluster).
func Info(name, doc string, newModule func() sdk.Module) sdk.Info {
	return sdk.Info{Name: name, Group: "hubevents", Doc: doc, Requires: []string{"cloudhub"}, Enabled: false, New: newModule}
}
