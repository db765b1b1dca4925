package controller

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/sdk/kube"
)

// RestConfig finds the API server for module (kube.RestConfig with the setting
// modules.<module>.kubeconfig) and sets its rate limits and the user agent kedge-<module>.
func RestConfig(kubeconfig, module string, qps float32, burst int) (*rest.Config, error) {
	cfg, err := kube.RestConfig(kubeconfig, "modules."+module+".kubeconfig")
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = qps, burst, "kedge-"+module
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
