package devicecontroller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// KubeEdge v1.23 keeps what the edge reports about a Device in a separate DeviceStatus object (same
// namespace and name, the Device as its controlling owner), created by its devicecontroller; Kedge's
// devicecontroller keeps one too, as well as Device.status (sdk/apis/README.md says why both).

// mirrorStatus makes the Device's DeviceStatus object hold st (twins, state, lastOnlineTime): created
// when missing, replaced when different (its extensions kept), guarded by resourceVersion and retried
// on conflict. What was last written is remembered, so a report that changes nothing costs no call.
func (m *Module) mirrorStatus(ctx context.Context, dev *v1beta1.Device, st v1beta1.DeviceInstanceStatus) error {
	want := v1beta1.DeviceStatusStatus{Twins: st.Twins, State: st.State, LastOnlineTime: st.LastOnlineTime, Conditions: st.Conditions}
	raw, err := json.Marshal(want)
	if err != nil {
		return err
	}
	key := dev.Namespace + "/" + dev.Name
	sum := fmt.Sprintf("%s/%x", dev.UID, sha256.Sum256(raw))
	m.mirrorMu.Lock()
	last := m.mirrored[key]
	m.mirrorMu.Unlock()
	if last == sum {
		return nil
	}
	record := func() {
		m.mirrorMu.Lock()
		m.mirrored[key] = sum
		m.mirrorMu.Unlock()
		m.metrics.deviceStatuses.WithLabelValues("ok").Inc()
	}
	if strings.HasPrefix(last, string(dev.UID)+"/") {
		// This process wrote (or checked) this Device's DeviceStatus: it exists with its owner, so the
		// new status is one merge patch (no read; the extensions stay). Gone meanwhile: the full path.
		patch, err := json.Marshal(map[string]any{"status": map[string]any{
			"twins": nilIfEmpty(len(want.Twins) == 0, want.Twins), "state": nilIfEmpty(want.State == "", want.State),
			"lastOnlineTime": nilIfEmpty(want.LastOnlineTime == "", want.LastOnlineTime),
			"conditions":     nilIfEmpty(len(want.Conditions) == 0, want.Conditions)}})
		if err != nil {
			return err
		}
		err = m.rest.Patch(types.MergePatchType).Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).Name(dev.Name).
			Param("fieldManager", "kedge-devicecontroller").Body(patch).Do(ctx).Error()
		if err == nil {
			record()
			return nil
		}
		if !apierrors.IsNotFound(err) {
			m.metrics.deviceStatuses.WithLabelValues("error").Inc()
			return fmt.Errorf("devicestatus %s: %w", key, err)
		}
	}
	owner := metav1.OwnerReference{APIVersion: v1beta1.GroupVersion.String(), Kind: "Device", Name: dev.Name, UID: dev.UID, Controller: ptrTrue()}
	for attempt := 0; ; attempt++ {
		cur := &v1beta1.DeviceStatus{}
		err := m.rest.Get().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).Name(dev.Name).Do(ctx).Into(cur)
		if err == nil && ownedBy(cur, owner) {
			held := cur.Status
			held.Extensions = nil
			if b, err := json.Marshal(held); err == nil && bytes.Equal(b, raw) {
				record() // already what it should be (a restart of this cloudcore): nothing to write
				return nil
			}
		}
		switch {
		case apierrors.IsNotFound(err):
			obj := &v1beta1.DeviceStatus{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "DeviceStatus"},
				ObjectMeta: metav1.ObjectMeta{Name: dev.Name, Namespace: dev.Namespace, OwnerReferences: []metav1.OwnerReference{owner}},
				Status:     want,
			}
			err = m.rest.Post().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).
				Param("fieldManager", "kedge-devicecontroller").Body(obj).Do(ctx).Error()
		case err == nil:
			// A DeviceStatus left by an earlier Device of the same name gets the current owner.
			owners := []metav1.OwnerReference{owner}
			for _, o := range cur.OwnerReferences {
				if o.Kind != "Device" || o.APIVersion != owner.APIVersion {
					owners = append(owners, o)
				}
			}
			cur.OwnerReferences = owners
			ext := cur.Status.Extensions
			cur.Status = want
			cur.Status.Extensions = ext
			err = m.rest.Put().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).Name(dev.Name).
				Param("fieldManager", "kedge-devicecontroller").Body(cur).Do(ctx).Error()
		}
		if err == nil {
			record()
			return nil
		}
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < conflictRetries {
			m.metrics.conflicts.Inc()
			continue
		}
		m.metrics.deviceStatuses.WithLabelValues("error").Inc()
		return fmt.Errorf("devicestatus %s: %w", key, err)
	}
}

// mirrorStatusOnce makes sure, once per Device in this process, that its DeviceStatus exists with
// what Device.status holds: after that, the reports this process handles keep it current (mirror),
// so an informer event of the Device (one follows every status write) costs nothing.
func (m *Module) mirrorStatusOnce(ctx context.Context, dev *v1beta1.Device) error {
	m.mirrorMu.Lock()
	seen := strings.HasPrefix(m.mirrored[dev.Namespace+"/"+dev.Name], string(dev.UID)+"/")
	m.mirrorMu.Unlock()
	if seen {
		return nil
	}
	return m.mirrorStatus(ctx, dev, dev.Status)
}

// ownedBy says whether ds has owner (same UID) as its controlling owner.
func ownedBy(ds *v1beta1.DeviceStatus, owner metav1.OwnerReference) bool {
	for _, o := range ds.OwnerReferences {
		if o.UID == owner.UID && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// nilIfEmpty is v, or nil (JSON null: the merge patch removes the field) when empty.
func nilIfEmpty(empty bool, v any) any {
	if empty {
		return nil
	}
	return v
}

// dropStatus deletes the DeviceStatus of a deleted Device (its owner reference lets the garbage
// collector do it too; this does not wait for one to run).
func (m *Module) dropStatus(ctx context.Context, ns, name string) error {
	m.mirrorMu.Lock()
	delete(m.mirrored, ns+"/"+name)
	m.mirrorMu.Unlock()
	err := m.rest.Delete().Namespace(ns).Resource(v1beta1.ResourceDeviceStatuses).Name(name).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("devicestatus %s/%s: %w", ns, name, err)
	}
	return nil
}

func ptrTrue() *bool { t := true; return &t }
