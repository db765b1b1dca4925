package devicecontroller

import (
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/sdk"
)

// InfoWithClient is the module's registration whose instances talk to the API server through cfg
// (e.g. one that counts their requests) instead of their kubeconfig; got, if set, is handed each
// instance as it is made.
func InfoWithClient(cfg *rest.Config, got func(*Module)) sdk.Info {
	info, _ := sdk.Lookup(Name)
	info.New = func() sdk.Module {
		m := New()
		var err error
		if m.rest, err = NewRESTClient(cfg); err != nil {
			panic(err)
		}
		if m.client, err = kubernetes.NewForConfig(cfg); err != nil {
			panic(err)
		}
		if got != nil {
			got(m)
		}
		return m
	}
	return info
}
