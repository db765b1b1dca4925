package devicetwin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kedge-io/kedge/sdk"
	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// applyCloud stores a Device, DeviceModel or membership from the cloud and acts on the change.
func (m *Module) applyCloud(ctx context.Context, msg sdk.Message, res message.Resource) error {
	var rv uint64
	if msg.Header.ResourceVersion != "" {
		var err error
		if rv, err = strconv.ParseUint(msg.Header.ResourceVersion, 10, 64); err != nil {
			return fmt.Errorf("%s: resourceversion %q is not a number", msg.Route.Resource, msg.Header.ResourceVersion)
		}
	}
	k := res.Namespace + "/" + res.Name
	switch res.Type {
	case typeDeviceModel:
		var dm devicesv1beta1.DeviceModel
		if err := msg.DecodeContent(&dm); err != nil {
			return err
		}
		r, err := m.host.Store().Put(ctx, sdk.Object{Key: sdk.Key{Type: typeDeviceModel, Namespace: res.Namespace, Name: res.Name}, ResourceVersion: rv, Value: msg.Content})
		if err != nil || !r.Applied {
			return err
		}
		m.models[k] = &dm
	case typeDevice:
		var d devicesv1beta1.Device
		if err := msg.DecodeContent(&d); err != nil {
			return err
		}
		r, err := m.host.Store().Put(ctx, sdk.Object{Key: sdk.Key{Type: typeDevice, Namespace: res.Namespace, Name: res.Name}, ResourceVersion: rv, Value: msg.Content})
		if err != nil || !r.Applied {
			return err
		}
		m.setDevice(res.Namespace, res.Name, &d)
		return m.applyDesired(ctx, res.Namespace, res.Name, &d)
	case typeMembership:
		var mc membershipContent
		if err := msg.DecodeContent(&mc); err != nil {
			return err
		}
		if _, err := m.host.Store().Put(ctx, sdk.Object{Key: sdk.Key{Type: typeMembership, Namespace: res.Namespace, Name: res.Name}, Value: msg.Content}); err != nil {
			return err
		}
		old := m.membership[res.Name]
		m.membership[res.Name] = mc.Devices
		m.membershipChanged(ctx, res.Name, old, mc.Devices)
	}
	return nil
}

func (m *Module) deleteCloud(ctx context.Context, res message.Resource) error {
	switch res.Type {
	case typeDeviceModel:
		delete(m.models, res.Namespace+"/"+res.Name)
		_, err := m.host.Store().Delete(ctx, sdk.Key{Type: typeDeviceModel, Namespace: res.Namespace, Name: res.Name})
		return err
	case typeDevice:
		return m.deleteDevice(ctx, res.Namespace, res.Name)
	case typeMembership:
		old := m.membership[res.Name]
		delete(m.membership, res.Name)
		if _, err := m.host.Store().Delete(ctx, sdk.Key{Type: typeMembership, Namespace: res.Namespace, Name: res.Name}); err != nil {
			return err
		}
		m.membershipChanged(ctx, res.Name, old, nil)
	}
	return nil
}

func (m *Module) setDevice(ns, name string, d *devicesv1beta1.Device) {
	k := ns + "/" + name
	if _, ok := m.devices[k]; !ok && !slices.Contains(m.byName[name], ns) {
		m.byName[name] = append(m.byName[name], ns)
	}
	m.devices[k] = d
}

// deleteDevice removes a device with its twins and state.
func (m *Module) deleteDevice(ctx context.Context, ns, name string) error {
	k := ns + "/" + name
	st := m.host.Store()
	for prop := range m.twins[k] {
		if _, err := st.Delete(ctx, sdk.Key{Type: typeTwin, Namespace: ns, Name: name + "/" + prop}); err != nil {
			return err
		}
	}
	if _, err := st.Delete(ctx, sdk.Key{Type: typeDeviceState, Namespace: ns, Name: name}); err != nil {
		return err
	}
	if _, err := st.Delete(ctx, sdk.Key{Type: typeDevice, Namespace: ns, Name: name}); err != nil {
		return err
	}
	delete(m.devices, k)
	delete(m.twins, k)
	delete(m.states, k)
	m.byName[name] = slices.DeleteFunc(m.byName[name], func(s string) bool { return s == ns })
	if len(m.byName[name]) == 0 {
		delete(m.byName, name)
	}
	m.pendingMu.Lock()
	delete(m.pending, k)
	delete(m.health, k)
	m.pendingMu.Unlock()
	return nil
}

func (m *Module) modelOf(ns string, d *devicesv1beta1.Device) (*devicesv1beta1.DeviceModel, string) {
	if d.Spec.DeviceModelRef == nil || d.Spec.DeviceModelRef.Name == "" {
		return nil, ""
	}
	return m.models[ns+"/"+d.Spec.DeviceModelRef.Name], d.Spec.DeviceModelRef.Name
}

func modelProperty(dm *devicesv1beta1.DeviceModel, prop string) *devicesv1beta1.ModelProperty {
	if dm == nil {
		return nil
	}
	for i := range dm.Spec.Properties {
		if dm.Spec.Properties[i].Name == prop {
			return &dm.Spec.Properties[i]
		}
	}
	return nil
}

// applyDesired stores the cloud's desired values as expected values; a changed one is published on
// twin/update/document and, when it differs from the actual value, on twin/update/delta for the
// device's mapper. The next upstream status carries it as observedDesired.
func (m *Module) applyDesired(ctx context.Context, ns, name string, d *devicesv1beta1.Device) error {
	k := ns + "/" + name
	model, _ := m.modelOf(ns, d)
	now := nowMS()
	docs := map[string]*twinDoc{}
	var objs []sdk.Object
	var changed []*msgTwin
	var props []string
	for _, p := range d.Spec.Properties {
		if p.Desired.Value == "" {
			m.desiredAccepted(ns, name, p.Name) // propfail.go: no desired value, nothing refused
			continue
		}
		old := m.twins[k][p.Name]
		if old != nil && old.Expected.value() == p.Desired.Value {
			m.desiredAccepted(ns, name, p.Name)
			continue
		}
		mp := modelProperty(model, p.Name)
		if mp != nil {
			if err := checkValue(mp, p.Desired.Value); err != nil {
				m.log.Error("desired value from the cloud refused", "device", k, "err", err)
				m.desiredRefused(ns, name, p.Name, err.Error())
				continue
			}
			m.desiredAccepted(ns, name, p.Name)
		}
		ts := now
		if s, err := strconv.ParseInt(p.Desired.Metadata["timestamp"], 10, 64); err == nil && s > 0 {
			ts = s
		}
		cur := old.clone()
		if cur == nil {
			cur = &msgTwin{}
		}
		v := p.Desired.Value
		cur.Expected = &twinValue{Value: &v, Metadata: &valueMetadata{Timestamp: ts}}
		if mp != nil {
			cur.Metadata = &typeMetadata{Type: strings.ToLower(string(mp.Type))}
		}
		ver := twinVersion{}
		if cur.ExpectedVersion != nil {
			ver = *cur.ExpectedVersion
		}
		ver.Cloud++
		cur.ExpectedVersion = &ver
		raw, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		objs = append(objs, sdk.Object{Key: sdk.Key{Type: typeTwin, Namespace: ns, Name: name + "/" + p.Name}, Value: raw})
		docs[p.Name] = &twinDoc{Last: noVersions(old), Current: noVersions(cur)}
		changed = append(changed, cur)
		props = append(props, p.Name)
	}
	if len(objs) == 0 {
		return nil
	}
	if _, err := m.host.Store().PutBatch(ctx, objs); err != nil {
		return err
	}
	m.metrics.updates.Add(float64(len(objs)))
	if m.twins[k] == nil {
		m.twins[k] = map[string]*msgTwin{}
	}
	for i, p := range props {
		m.twins[k][p] = changed[i]
	}
	m.pend(ns, name, func(ps *pendingStatus) {
		for i, p := range props {
			ps.twin(p).ObservedDesired = &statusProperty{Value: changed[i].Expected.value(),
				Metadata: map[string]string{"timestamp": msString(changed[i].Expected.ts())}}
		}
	})
	base := baseMessage{EventID: message.NewID(), Timestamp: now}
	doc := twinDocument{baseMessage: base, Twin: docs}
	delta, hasDelta := m.deltaPayload(ns, name)
	for _, b := range m.cloudBases(ns, name) {
		m.publish(ctx, b+"/twin/update/document", doc)
		if hasDelta {
			m.publish(ctx, b+"/twin/update/delta", delta)
		}
	}
	return nil
}

// cloudBases are the device topics a change from the cloud is published under: the namespaced
// form ($hw/events/device/<ns>/<name>, the ID KubeEdge v1.23 mappers use; v1.23.1 itself publishes
// nothing on MQTT for a cloud change, its mappers get it through DMI), and the short form ($hw/events/device/<name>, for Kedge's mappers and scripts) while the name is unique
// on the node (an ambiguous name is not addressed by the short form).
func (m *Module) cloudBases(ns, name string) []string {
	bases := []string{deviceTopic(ns+"/"+name, "")}
	if len(m.byName[name]) <= 1 {
		bases = append(bases, deviceTopic(name, ""))
	}
	return bases
}

// delta builds twin/update/delta under base when an expected value differs from the actual one.
func (m *Module) delta(ns, name, base string) (sdk.Message, bool) {
	d, ok := m.deltaPayload(ns, name)
	if !ok {
		return sdk.Message{}, false
	}
	return m.build(base+"/twin/update/delta", d)
}

// deltaPayload is the twin/update/delta payload when an expected value differs from the actual one.
func (m *Module) deltaPayload(ns, name string) (twinDelta, bool) {
	twins := map[string]*msgTwin{} // as KubeEdge: the twins with an expected value, without versions
	delta := map[string]string{}
	for p, t := range m.twins[ns+"/"+name] {
		if t.Expected == nil || t.Expected.value() == "" {
			continue
		}
		twins[p] = noVersions(t)
		if t.Actual == nil || t.Actual.value() != t.Expected.value() {
			delta[p] = t.Expected.value()
		}
	}
	if len(delta) == 0 {
		return twinDelta{}, false
	}
	return twinDelta{baseMessage: baseMessage{EventID: message.NewID(), Timestamp: nowMS()}, Twin: twins, Delta: delta}, true
}

// membershipChanged publishes $hw/events/node/<node>/membership/updated with what was added and
// removed.
func (m *Module) membershipChanged(ctx context.Context, node string, old, cur []memberRef) {
	var added, removed []memberDevice
	for _, r := range cur {
		if !slices.Contains(old, r) {
			added = append(added, m.describe(r.Namespace, r.Name))
		}
	}
	for _, r := range old {
		if !slices.Contains(cur, r) {
			removed = append(removed, m.describe(r.Namespace, r.Name))
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	m.publish(ctx, "$hw/events/node/"+node+"/membership/updated", membershipUpdated{
		baseMessage: baseMessage{EventID: message.NewID(), Timestamp: nowMS()}, AddDevices: added, RemoveDevices: removed})
}

// describe is a device as membership payloads show it.
func (m *Module) describe(ns, name string) memberDevice {
	k := ns + "/" + name
	md := memberDevice{ID: ns + "/" + name, Name: name, Namespace: ns, State: "unknown", Twin: noVersionsMap(m.twins[k])}
	if s, ok := m.states[k]; ok {
		md.State, md.LastOnline = s.State, s.LastOnlineTime
	}
	return md
}

func deviceTopic(id, suffix string) string { return "$hw/events/device/" + id + suffix }
