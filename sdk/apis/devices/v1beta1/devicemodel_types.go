package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeviceModel describes a kind of device: its protocol and the properties every device of the model
// has, with their types, access modes and ranges.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.protocol`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DeviceModel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DeviceModelSpec `json:"spec,omitempty"`
}

// DeviceModelList is a list of DeviceModels.
//
// +kubebuilder:object:root=true
type DeviceModelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeviceModel `json:"items"`
}

// DeviceModelSpec is the model's protocol and properties.
type DeviceModelSpec struct {
	// Properties every device of this model has.
	// +optional
	// +listType=map
	// +listMapKey=name
	Properties []ModelProperty `json:"properties,omitempty"`
	// Protocol the model's devices speak, e.g. modbus.
	// +optional
	Protocol string `json:"protocol,omitempty"`
	// ProtocolConfigData is free-form protocol configuration shared by the model's devices (a device's
	// own spec.protocol.configData takes precedence).
	// +optional
	ProtocolConfigData *CustomizedValue `json:"protocolConfigData,omitempty"`
}

// PropertyType is the type of a property's value.
// +kubebuilder:validation:Enum=INT;FLOAT;DOUBLE;STRING;BOOLEAN;BYTES;STREAM
type PropertyType string

// Property types.
const (
	TypeInt     PropertyType = "INT"
	TypeFloat   PropertyType = "FLOAT"
	TypeDouble  PropertyType = "DOUBLE"
	TypeString  PropertyType = "STRING"
	TypeBoolean PropertyType = "BOOLEAN"
	TypeBytes   PropertyType = "BYTES"
	TypeStream  PropertyType = "STREAM"
)

// PropertyAccessMode says whether a property may be written.
// +kubebuilder:validation:Enum=ReadWrite;ReadOnly
type PropertyAccessMode string

// Access modes.
const (
	ReadWrite PropertyAccessMode = "ReadWrite"
	ReadOnly  PropertyAccessMode = "ReadOnly"
)

// ModelProperty is one property of a model.
type ModelProperty struct {
	// Name of the property, unique in the model.
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Description of the property.
	// +optional
	Description string `json:"description,omitempty"`
	// Type of the property's value.
	// +kubebuilder:validation:Required
	Type PropertyType `json:"type"`
	// AccessMode says whether the property may be written (ReadWrite) or only read (ReadOnly).
	// +kubebuilder:validation:Required
	AccessMode PropertyAccessMode `json:"accessMode"`
	// Minimum value (numeric types), as text.
	// +optional
	Minimum string `json:"minimum,omitempty"`
	// Maximum value (numeric types), as text.
	// +optional
	Maximum string `json:"maximum,omitempty"`
	// Unit of the value, e.g. "Celsius".
	// +optional
	Unit string `json:"unit,omitempty"`
	// Visitors is the model-wide default of how the property is read (a device's own
	// spec.properties[].visitors takes precedence).
	// +optional
	Visitors *VisitorConfig `json:"visitors,omitempty"`
}
