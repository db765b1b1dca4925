// Package kube holds what every cloud module that talks to the Kubernetes API shares: finding the API
// server from a module's kubeconfig setting.
package kube

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RestConfig finds the API server: the kubeconfig at path, else $KUBECONFIG, else the in-cluster
// service account. setting names the config key that holds path, for the error when none is found
// (e.g. "modules.edgecontroller.kubeconfig").
func RestConfig(path, setting string) (*rest.Config, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no kubeconfig set (%s or $KUBECONFIG) and not in a cluster: %w", setting, err)
	}
	return cfg, nil
}

// BuiltinTypes returns a copy of cfg for a clientset of Kubernetes' own types (kubernetes.NewForConfig):
// it speaks protobuf, which the API server and the client encode and decode several times faster
// than JSON — watching thousands of nodes' Leases and Nodes is much of an idle cloudcore's work.
// Never for custom resources, which have no protobuf form.
func BuiltinTypes(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return c
}
