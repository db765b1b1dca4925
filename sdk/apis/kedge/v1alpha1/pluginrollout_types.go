package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PluginRollout says: this plugin, at this version and runtime, replaces (or installs) module
// spec.module on the edge nodes matching spec.nodeSelector, spec.maxParallel nodes at a time in
// node-name order. A node that fails (or rolls back) pauses the rollout; so does spec.paused.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=prl
// +kubebuilder:printcolumn:name="Plugin",type=string,JSONPath=`.spec.plugin`,priority=1
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`,priority=1
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desired`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.updated`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failed`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PluginRollout struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:validation:Required
	Spec PluginRolloutSpec `json:"spec"`
	// +optional
	Status PluginRolloutStatus `json:"status,omitempty"`
}

// PluginRolloutList is a list of PluginRollouts.
//
// +kubebuilder:object:root=true
type PluginRolloutList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PluginRollout `json:"items"`
}

// Runtimes a rolled-out plugin runs in on the edge.
const (
	RuntimeProcess = "process"
	RuntimeWasm    = "wasm"
)

// PluginRolloutSpec is what to roll out, and where.
type PluginRolloutSpec struct {
	// Plugin is the plugin's name in the registry index.
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`
	Plugin string `json:"plugin"`
	// Version is the plugin version (semver 2.0.0, no leading v).
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:Pattern=`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`
	Version string `json:"version"`
	// Runtime is how the edge runs it: process (a go-plugin executable for the node's os/arch) or
	// wasm (a sandboxed WebAssembly module).
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:Enum=process;wasm
	Runtime string `json:"runtime"`
	// Module is the name of the edge module the plugin replaces (hot swap) or installs.
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Module string `json:"module"`
	// NodeSelector picks the edge nodes (label node-role.kubernetes.io/edge) to roll out to; absent
	// or empty: every edge node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// MaxParallel is how many nodes are updated at a time.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	MaxParallel int32 `json:"maxParallel,omitempty"`
	// GrantedCapabilities are what a WASM plugin may use; a plugin asking for more is refused by the
	// edge (the node fails, the rollout pauses).
	// +optional
	GrantedCapabilities []string `json:"grantedCapabilities,omitempty"`
	// Paused stops the rollout by hand: no node is sent anything new (nodes already installing
	// finish and report). Setting it back to false resumes where it stopped; changing only this
	// field does not restart the rollout (a failed node is retried by changing the rest of the spec).
	// +optional
	// +kubebuilder:default=false
	Paused bool `json:"paused,omitempty"`
}

// Rollout phases.
const (
	PhaseProgressing = "Progressing"
	PhasePaused      = "Paused"
	PhaseComplete    = "Complete"
)

// Why a rollout is paused (status.pauseReason).
const (
	// PausedBySpec: spec.paused is true.
	PausedBySpec = "Spec"
	// PausedByFailure: a node failed or rolled back.
	PausedByFailure = "NodeFailed"
	// PausedByInvalidSelector: spec.nodeSelector is not a valid selector.
	PausedByInvalidSelector = "InvalidSelector"
)

// Node states in a rollout.
const (
	NodePending    = "Pending"
	NodeInstalling = "Installing"
	NodeUpdated    = "Updated"
	NodeFailed     = "Failed"
	NodeRolledBack = "RolledBack"
)

// PluginRolloutStatus is how far the rollout got.
type PluginRolloutStatus struct {
	// Phase is Progressing, Paused (spec.paused, or a node failed or rolled back: no further node is started) or
	// Complete (every selected node runs the version).
	// +optional
	// +kubebuilder:validation:Enum=Progressing;Paused;Complete
	Phase string `json:"phase,omitempty"`
	// PauseReason says why the phase is Paused: Spec (spec.paused is true), NodeFailed (a node failed
	// or rolled back) or InvalidSelector. Empty when not paused.
	// +optional
	// +kubebuilder:validation:Enum=Spec;NodeFailed;InvalidSelector
	PauseReason string `json:"pauseReason,omitempty"`
	// Message says why the rollout is paused (paused by spec, and/or the failing node's message).
	// +optional
	Message string `json:"message,omitempty"`
	// Desired is the number of nodes the selector matches.
	// +optional
	Desired int32 `json:"desired"`
	// Updated is the number of those nodes running the version.
	// +optional
	Updated int32 `json:"updated"`
	// Failed is the number of those nodes that failed or rolled back.
	// +optional
	Failed int32 `json:"failed"`
	// Nodes is each selected node's progress, by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	Nodes []NodeRolloutStatus `json:"nodes,omitempty"`
	// ObservedGeneration is the spec generation this status is about.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// RolloutGeneration is the generation the nodes are sent and report about: the last generation
	// that changed the spec other than spec.paused (pausing or resuming keeps it, so reports of nodes
	// installing meanwhile still count).
	// +optional
	RolloutGeneration int64 `json:"rolloutGeneration,omitempty"`
	// SpecHash identifies the spec (without spec.paused) of RolloutGeneration.
	// +optional
	SpecHash string `json:"specHash,omitempty"`
}

// NodeRolloutStatus is one node's progress.
type NodeRolloutStatus struct {
	// Name of the node.
	// +kubebuilder:validation:Required
	Name string `json:"name"`
	// Version the node last reported for this rollout's plugin.
	// +optional
	Version string `json:"version,omitempty"`
	// State is Pending (not started), Installing (sent, or the edge said it is installing), Updated,
	// Failed or RolledBack (the new version failed its health check; the last good one runs again).
	// +kubebuilder:validation:Enum=Pending;Installing;Updated;Failed;RolledBack
	State string `json:"state"`
	// Message is what the edge said (why it failed, what it rolled back to).
	// +optional
	Message string `json:"message,omitempty"`
	// UpdatedAt is when the state last changed.
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`
}
