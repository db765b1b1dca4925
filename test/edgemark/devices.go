package edgemark

import (
	"context"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// DeviceModelName is the DeviceModel CreateDevices makes: a thermometer with TwinProperty.
const DeviceModelName = "edgemark-thermometer"

// CreateDevices makes, in namespace ns, the DeviceModel DeviceModelName and one Device per node
// (named as the node, bound to it, property TwinProperty reported to the cloud), parallel creates at
// most at once: what the nodes' twin reports (Options.TwinPeriod) are about. Existing ones are kept.
func CreateDevices(ctx context.Context, cfg *rest.Config, ns string, nodes []string, parallel int) error {
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	gv := v1beta1.GroupVersion
	models := dc.Resource(schema.GroupVersionResource{Group: gv.Group, Version: gv.Version, Resource: v1beta1.ResourceDeviceModels}).Namespace(ns)
	devices := dc.Resource(schema.GroupVersionResource{Group: gv.Group, Version: gv.Version, Resource: v1beta1.ResourceDevices}).Namespace(ns)
	model := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gv.String(), "kind": "DeviceModel",
		"metadata": map[string]any{"name": DeviceModelName, "namespace": ns},
		"spec": map[string]any{"protocol": "virtualProtocol", "properties": []any{map[string]any{
			"name": TwinProperty, "type": "FLOAT", "accessMode": "ReadOnly", "minimum": "-40", "maximum": "125", "unit": "Celsius"}}},
	}}
	if _, err := models.Create(ctx, model, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create DeviceModel %s/%s: %w", ns, DeviceModelName, err)
	}
	sem := make(chan struct{}, max(1, parallel))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, node := range nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": gv.String(), "kind": "Device",
				"metadata": map[string]any{"name": node, "namespace": ns},
				"spec": map[string]any{
					"deviceModelRef": map[string]any{"name": DeviceModelName}, "nodeName": node,
					"protocol":   map[string]any{"protocolName": "virtualProtocol", "configData": map[string]any{"data": map[string]any{"deviceID": 1}}},
					"properties": []any{map[string]any{"name": TwinProperty, "reportCycle": 10000, "collectCycle": 10000, "reportToCloud": true}},
				},
			}}
			if _, err := devices.Create(ctx, d, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("create Device %s/%s: %w", ns, node, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
