package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of devices.
const GroupName = "devices.kubeedge.io"

var (
	// GroupVersion is devices.kubeedge.io/v1beta1.
	GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1beta1"}
	// SchemeGroupVersion is GroupVersion under the name generated clients expect.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the types of this package.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds Device, DeviceModel, DeviceStatus and their lists to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource names (plural, as in the API paths).
const (
	ResourceDevices        = "devices"
	ResourceDeviceModels   = "devicemodels"
	ResourceDeviceStatuses = "devicestatuses"
)

// Resource returns the group-qualified resource of a plural resource name.
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Device{}, &DeviceList{}, &DeviceModel{}, &DeviceModelList{}, &DeviceStatus{}, &DeviceStatusList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
