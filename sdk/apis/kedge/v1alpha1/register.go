package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of Kedge's own resources.
const GroupName = "kedge.io"

var (
	// GroupVersion is kedge.io/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}
	// SchemeGroupVersion is GroupVersion under the name generated clients expect.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the types of this package.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds PluginRollout and PluginRolloutList to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// ResourcePluginRollouts is the plural resource name, as in the API paths.
const ResourcePluginRollouts = "pluginrollouts"

// Resource returns the group-qualified resource of a plural resource name.
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &PluginRollout{}, &PluginRolloutList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
