package edgehub

import (
	"regexp"
	"time"
)

// The Kubernetes Node, as KubeEdge's cloudcore decodes it from the edge's registration and status
// messages: only the fields the KubeEdge cloud adapter sets, in the JSON of k8s.io/api core/v1. They
// are written here so that edgehub, linked by every edgecore class, does not link k8s.io/api and
// apimachinery (kubeedge_test.go decodes them with k8s.io/api to prove the two agree).

type node struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct{}   `json:"spec"`
	Status     nodeStatus `json:"status"`
}

type objectMeta struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

type nodeStatus struct {
	Capacity    map[string]string `json:"capacity,omitempty"`
	Allocatable map[string]string `json:"allocatable,omitempty"`
	Phase       string            `json:"phase,omitempty"`
	Conditions  []nodeCondition   `json:"conditions,omitempty"`
	Addresses   []nodeAddress     `json:"addresses,omitempty"`
	NodeInfo    nodeSystemInfo    `json:"nodeInfo"`
}

type nodeCondition struct {
	Type               string   `json:"type"`
	Status             string   `json:"status"`
	LastHeartbeatTime  kubeTime `json:"lastHeartbeatTime"`
	LastTransitionTime kubeTime `json:"lastTransitionTime"`
	Reason             string   `json:"reason,omitempty"`
	Message            string   `json:"message,omitempty"`
}

type nodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

type nodeSystemInfo struct {
	MachineID               string `json:"machineID"`
	SystemUUID              string `json:"systemUUID"`
	BootID                  string `json:"bootID"`
	KernelVersion           string `json:"kernelVersion"`
	OSImage                 string `json:"osImage"`
	ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
	KubeletVersion          string `json:"kubeletVersion"`
	KubeProxyVersion        string `json:"kubeProxyVersion"`
	OperatingSystem         string `json:"operatingSystem"`
	Architecture            string `json:"architecture"`
}

// kubeTime is a time as Kubernetes writes it (metav1.Time): RFC 3339 in UTC, whole seconds.
type kubeTime time.Time

func (t kubeTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(time.RFC3339) + `"`), nil
}

// quantityRE is the grammar of a Kubernetes resource.Quantity: a signed decimal number and an optional
// binary (Ki..Ei), decimal (m, k, M..E) or exponent (e3, E-2) suffix.
var quantityRE = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$`)
