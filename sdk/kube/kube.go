// Package kube holds what every cloud module that talks to the Kubernetes API shares: finding the API
// server from a module's kubeconfig setting.
package kube

import (
	"fmt"
	"os"

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
