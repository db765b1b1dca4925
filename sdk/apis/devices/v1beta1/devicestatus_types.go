package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeviceStatus holds what the edge reported about one Device: its twins (reported and observed
// desired values), its state and when it was last online. One per Device, with the Device's name and
// namespace and the Device as its owner (so it goes when the Device goes); cloudcore's
// devicecontroller creates it and keeps it up to date, as KubeEdge v1.23's does.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Last Online",type=string,JSONPath=`.status.lastOnlineTime`
// +kubebuilder:printcolumn:name="Healthy",type=string,JSONPath=`.status.conditions[?(@.type=="Healthy")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DeviceStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is empty: the Device is named by the object's name and owner reference.
	// +optional
	Spec DeviceStatusSpec `json:"spec,omitempty"`
	// +optional
	Status DeviceStatusStatus `json:"status,omitempty"`
}

// DeviceStatusList is a list of DeviceStatuses.
//
// +kubebuilder:object:root=true
type DeviceStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeviceStatus `json:"items"`
}

// DeviceStatusSpec is empty (KubeEdge's is too).
type DeviceStatusSpec struct{}

// DeviceStatusStatus is the device's twins, state and last online time.
type DeviceStatusStatus struct {
	// Twins are the properties' reported values and the desired values the device last saw.
	// +optional
	Twins []Twin `json:"twins,omitempty"`
	// State of the device as its mapper sees it: online, offline, unknown, ...
	// +optional
	State string `json:"state,omitempty"`
	// LastOnlineTime is when the device was last online: RFC 3339 in UTC ("2026-12-06T05:46:13Z"),
	// as KubeEdge v1.23.1's edgecore writes it; "2006-01-02 15:04:05" is accepted too.
	// +optional
	LastOnlineTime string `json:"lastOnlineTime,omitempty"`
	// Conditions are the Device's (Device.status.conditions, a Kedge addition): type Healthy.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Extensions is free-form further status.
	// +optional
	Extensions *CustomizedValue `json:"extensions,omitempty"`
}
