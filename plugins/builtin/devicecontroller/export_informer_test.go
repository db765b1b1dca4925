package devicecontroller

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// NewStatusInformer is the module's DeviceStatus informer (objects slimmed to what the mirror needs).
func NewStatusInformer(client rest.Interface) (cache.SharedIndexInformer, error) {
	return newStatusInformer(client, nil)
}

// StatusCopyVersion is the resourceVersion of the DeviceStatus informer's copy of ns/name (false: it
// has none).
func (m *Module) StatusCopyVersion(ns, name string) (uint64, bool) {
	c := m.statusCopyOf(ns + "/" + name)
	if c == nil {
		return 0, false
	}
	return c.rv, true
}

// PutStatusCopy puts ds into the DeviceStatus informer's store as if its watch had just delivered it
// (a test makes the informer lag behind).
func (m *Module) PutStatusCopy(ds *v1beta1.DeviceStatus) error {
	c, err := slimStatus(ds)
	if err != nil {
		return err
	}
	return m.dsInf.GetStore().Update(c)
}

// DeviceCopy is the Device informer's copy of ns/name (nil: it has none).
func (m *Module) DeviceCopy(ns, name string) *v1beta1.Device { return m.device(ns, name) }

// SlimStatus is the DeviceStatus informer's transform.
func SlimStatus(obj any) (any, error) { return slimStatus(obj) }
