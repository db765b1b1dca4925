// Package noruntime answers for the pods of an edge node that runs no container runtime module (a
// sensor gateway built without edged, or a node before edged is enabled): each pod bound to the node
// is reported Pending with the reason NoContainerRuntime, so `kubectl get pod` says why it does not
// run, and a pod the API deletes is confirmed deleted at once (nothing runs that must stop first).
//
// It takes edged's place in metamanager's consumers (consumers.pod: noruntime); never run both.
package noruntime

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address.
const Name = "noruntime"

// Reason is the pod status reason it reports.
const Reason = "NoContainerRuntime"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "pods",
		Doc:      "For nodes without edged: reports their pods Pending (reason NoContainerRuntime) and confirms deletions. Set metamanager's consumers.pod to noruntime.",
		Requires: []string{sdk.DefaultMetaManager},
		Enabled:  false,
		New:      func() sdk.Module { return &Module{MetaManager: sdk.DefaultMetaManager} },
	})
}

// Module is noruntime; its exported fields are its settings.
type Module struct {
	MetaManager string `yaml:"metaManager" doc:"Module that stores changes made on the edge and carries them to the cloud."`

	host     sdk.Host
	mu       sync.Mutex
	reported map[string]bool
}

func (m *Module) Start(_ context.Context, h sdk.Host) error {
	m.host, m.reported = h, map[string]bool{}
	return nil
}

func (m *Module) Stop(context.Context) error { return nil }

// Handle reacts to a stored pod: a status once per pod, a deletion confirmation when it is deleted.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	res, err := message.ParseEdge(msg.Route.Resource)
	if err != nil || res.Type != "pod" || msg.Route.Operation == message.OpDelete {
		return nil // configmaps, secrets, and the removal of a pod already gone: nothing runs here
	}
	var pod pod
	if err := json.Unmarshal(msg.Content, &pod); err != nil {
		return fmt.Errorf("pod %s: content is not a pod: %w", msg.Route.Resource, err)
	}
	if pod.Metadata.DeletionTimestamp != nil {
		out, err := message.New(Name, "resource", message.OpDelete, res.Edge()).WithContent(map[string]string{"uid": pod.Metadata.UID})
		if err != nil {
			return err
		}
		m.host.Logger().Info("pod deleted in the API; nothing runs here, confirming", "pod", res.Namespace+"/"+res.Name)
		return m.host.Send(ctx, m.MetaManager, out)
	}
	m.mu.Lock()
	done := m.reported[pod.Metadata.UID]
	m.reported[pod.Metadata.UID] = true
	m.mu.Unlock()
	if done || pod.Status.Reason == Reason {
		return nil
	}
	now := time.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
	status := podStatus{
		Phase:  "Pending",
		Reason: Reason,
		Message: fmt.Sprintf("edge node %s runs no container runtime module (edged is not enabled); the pod is stored on the node and waits",
			m.host.NodeName()),
		Conditions: []podCondition{
			{Type: "PodScheduled", Status: "True", LastTransitionTime: now},
			{Type: "Ready", Status: "False", Reason: Reason, LastTransitionTime: now},
		},
	}
	st := message.Resource{Namespace: res.Namespace, Type: "podstatus", Name: res.Name}
	out, err := message.New(Name, "resource", message.OpUpdate, st.Edge()).WithContent(map[string]any{"uid": pod.Metadata.UID, "name": pod.Metadata.Name, "status": status})
	if err != nil {
		return err
	}
	return m.host.Send(ctx, m.MetaManager, out)
}

// The parts of a Kubernetes Pod noruntime reads and writes, in the JSON of k8s.io/api core/v1: written
// here so that the pod-less device classes (gateway), which carry noruntime, do not link k8s.io/api.
type pod struct {
	Metadata struct {
		Name              string  `json:"name"`
		UID               string  `json:"uid"`
		DeletionTimestamp *string `json:"deletionTimestamp"`
	} `json:"metadata"`
	Status struct {
		Reason string `json:"reason"`
	} `json:"status"`
}

type podStatus struct {
	Phase      string         `json:"phase"`
	Reason     string         `json:"reason,omitempty"`
	Message    string         `json:"message,omitempty"`
	Conditions []podCondition `json:"conditions,omitempty"`
}

type podCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	LastTransitionTime string `json:"lastTransitionTime"` // RFC 3339, whole seconds, UTC (metav1.Time)
	Reason             string `json:"reason,omitempty"`
}
