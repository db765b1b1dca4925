package devicecontroller

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/kube/controller"
)

// KubeEdge v1.23 keeps what the edge reports about a Device in a separate DeviceStatus object (same
// namespace and name, the Device as its controlling owner), created by its devicecontroller; Kedge's
// devicecontroller keeps one too, as well as Device.status (sdk/apis/README.md says why both).
//
// What decides a DeviceStatus write, without reading the object:
//   - what this process last wrote to it (mirrored: the Device's UID, the digest of the status
//     written, the resourceVersion the write returned), and
//   - the DeviceStatus informer's copy, slimmed to statusCopy (its controlling owner, the digest of its
//     status, its resourceVersion).
//
// The informer's copy may be older than this process's last write (its watch event is still on its
// way): the record of the write wins unless the copy's resourceVersion is newer than the write's
// (someone else wrote after it). So a report never compares against a copy that predates this
// process's own write, and after a restart (nothing written yet) the informer's copy — listed at start
// as a consistent snapshot, kept current by the watch — answers what a GET of each object answered.

// mirrorRec is what this process last wrote to (or found in) a Device's DeviceStatus.
type mirrorRec struct {
	uid types.UID // the Device's
	sum [32]byte  // sha256 of the JSON of the status written (without extensions)
	rv  uint64    // the DeviceStatus's resourceVersion after the write (0: unknown)
}

// statusCopy is what the DeviceStatus informer keeps of one object (slimStatus): what the mirror
// needs to decide a write, a few hundred bytes instead of the object.
type statusCopy struct {
	namespace, name string
	rv              uint64
	owner           types.UID               // UID of the controlling owner (a Device); "" when none
	others          []metav1.OwnerReference // owners that are not Devices (a takeover keeps them)
	sum             [32]byte                // sha256 of the JSON of its status without extensions
}

// GetObjectMeta gives the informer's store the key and resourceVersion (meta.Accessor).
func (c *statusCopy) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: c.namespace, Name: c.name, ResourceVersion: strconv.FormatUint(c.rv, 10)}
}

func (c *statusCopy) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (c *statusCopy) DeepCopyObject() runtime.Object {
	out := *c
	if c.others != nil {
		out.others = make([]metav1.OwnerReference, len(c.others))
		for i := range c.others {
			c.others[i].DeepCopyInto(&out.others[i])
		}
	}
	return &out
}

// statusSum is the digest the mirror compares: sha256 of the JSON of st without its extensions.
func statusSum(st v1beta1.DeviceStatusStatus) [32]byte {
	st.Extensions = nil
	raw, err := json.Marshal(st)
	if err != nil { // not for these types; a zero digest matches no status, so the mirror writes
		return [32]byte{}
	}
	return sha256.Sum256(raw)
}

// slimStatus is the DeviceStatus informer's transform: the object becomes its statusCopy. It is
// idempotent (a watch-list passes objects through it twice) and leaves anything else as it is.
func slimStatus(obj any) (any, error) {
	ds, ok := obj.(*v1beta1.DeviceStatus)
	if !ok {
		return obj, nil
	}
	c := &statusCopy{namespace: ds.Namespace, name: ds.Name, rv: rvOf(ds), sum: statusSum(ds.Status)}
	for _, o := range ds.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			c.owner = o.UID
		}
		if !isDeviceOwner(o) {
			c.others = append(c.others, o)
		}
	}
	return c, nil
}

// isDeviceOwner says whether o names a Device (of any UID): a takeover replaces those.
func isDeviceOwner(o metav1.OwnerReference) bool {
	return o.Kind == "Device" && o.APIVersion == v1beta1.GroupVersion.String()
}

// newStatusInformer returns the informer on every DeviceStatus, its objects slimmed to statusCopy;
// refused, if set, is told when the API server forbids listing or watching them.
func newStatusInformer(client rest.Interface, refused chan<- error) (cache.SharedIndexInformer, error) {
	inf := controller.Informer(client, v1beta1.ResourceDeviceStatuses, &v1beta1.DeviceStatus{}, cache.Indexers{})
	if err := inf.SetTransform(slimStatus); err != nil {
		return nil, err
	}
	if refused != nil {
		err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			if apierrors.IsForbidden(err) {
				select {
				case refused <- err:
				default:
				}
			}
			cache.DefaultWatchErrorHandler(ctx, r, err)
		})
		if err != nil {
			return nil, err
		}
	}
	return inf, nil
}

// awaitStatuses waits up to syncTimeout for the DeviceStatus informer's first list. When it does not
// come (the identity may not list and watch devicestatuses, as with an RBAC role written before this
// informer: a refusal ends the wait at once), the module runs on, and until the informer has listed
// them the mirror reads a Device's DeviceStatus before its first write in this process, as it did
// before the informer (one GET per Device after a restart).
func (m *Module) awaitStatuses(ctx context.Context, refused <-chan error) {
	wctx, cancel := context.WithTimeout(ctx, m.SyncTimeout)
	defer cancel()
	synced := make(chan bool, 1)
	go func() { synced <- cache.WaitForCacheSync(wctx.Done(), m.dsInf.HasSynced) }()
	var why string
	select {
	case ok := <-synced:
		if ok {
			return
		}
		why = fmt.Sprintf("no answer within %s (syncTimeout)", m.SyncTimeout)
	case err := <-refused:
		why = err.Error()
		cancel()
		<-synced
	}
	m.host.Logger().Warn("DeviceStatus objects cannot be listed and watched: each Device's DeviceStatus is read before its first write instead (one GET per Device after a restart) until they can; grant list and watch on devicestatuses.devices.kubeedge.io",
		"err", why)
}

// statusCopyOf is the informer's copy of the DeviceStatus key ("ns/name"), nil when it has none.
func (m *Module) statusCopyOf(key string) *statusCopy {
	o, ok, _ := m.dsInf.GetStore().GetByKey(key)
	if !ok {
		return nil
	}
	c, _ := o.(*statusCopy)
	return c
}

// lockMirror serializes the mirror of one Device (its first sync and a report may meet); different
// Devices mostly take different locks.
func (m *Module) lockMirror(key string) func() {
	h := fnv.New32a()
	h.Write([]byte(key))
	l := &m.mirrorLocks[h.Sum32()%uint32(len(m.mirrorLocks))]
	l.Lock()
	return l.Unlock
}

// mirrorStatus makes the Device's DeviceStatus object hold st (twins, state, lastOnlineTime,
// conditions; its extensions kept), deciding from what this process wrote last and the informer's
// copy (see above), without a read: nothing when it holds st already, a merge patch of the status when
// it exists with this Device as its owner, a create when it does not exist, a merge patch of owners
// and status (guarded by resourceVersion) when an earlier Device of the same name left it. When the
// object is not as expected (gone, there already, changed meanwhile) it is read and written,
// guarded by resourceVersion and retried on conflict.
func (m *Module) mirrorStatus(ctx context.Context, dev *v1beta1.Device, st v1beta1.DeviceInstanceStatus) error {
	key := dev.Namespace + "/" + dev.Name
	defer m.lockMirror(key)()
	return m.mirrorLocked(ctx, dev, st)
}

// mirrorStatusOnce makes sure, once per Device in this process, that its DeviceStatus exists with
// what Device.status holds: after that, the reports this process handles keep it current (mirror),
// so an informer event of the Device (one follows every status write, and may show an older status
// than the last report wrote) costs nothing.
func (m *Module) mirrorStatusOnce(ctx context.Context, dev *v1beta1.Device) error {
	key := dev.Namespace + "/" + dev.Name
	defer m.lockMirror(key)()
	m.mirrorMu.Lock()
	rec, ok := m.mirrored[key]
	m.mirrorMu.Unlock()
	if ok && rec.uid == dev.UID {
		return nil
	}
	return m.mirrorLocked(ctx, dev, dev.Status)
}

// mirrorLocked is mirrorStatus under the Device's mirror lock.
func (m *Module) mirrorLocked(ctx context.Context, dev *v1beta1.Device, st v1beta1.DeviceInstanceStatus) error {
	want := v1beta1.DeviceStatusStatus{Twins: st.Twins, State: st.State, LastOnlineTime: st.LastOnlineTime, Conditions: st.Conditions}
	sum := statusSum(want)
	key := dev.Namespace + "/" + dev.Name
	m.mirrorMu.Lock()
	rec, mine := m.mirrored[key]
	m.mirrorMu.Unlock()
	mine = mine && rec.uid == dev.UID
	var cur *statusCopy
	listed := m.dsInf.HasSynced() // else (awaitStatuses) the informer's silence says nothing
	if listed {
		cur = m.statusCopyOf(key)
	}
	record := func(rv uint64, result string) {
		m.mirrorMu.Lock()
		m.mirrored[key] = mirrorRec{uid: dev.UID, sum: sum, rv: rv}
		m.mirrorMu.Unlock()
		m.metrics.deviceStatuses.WithLabelValues(result).Inc()
	}
	owner := metav1.OwnerReference{APIVersion: v1beta1.GroupVersion.String(), Kind: "Device", Name: dev.Name, UID: dev.UID, Controller: ptrTrue()}
	var (
		body []byte
		done bool // written
		err  error
	)
	switch {
	case mine && (cur == nil || rec.rv == 0 || cur.rv <= rec.rv):
		// This process's write is the latest known (the informer may not show it yet, or the object
		// is gone meanwhile: the patch finds out): compare with it.
		if rec.sum == sum {
			return nil
		}
		body, done, err = m.patchStatus(ctx, dev, want, nil)
	case !listed:
		// The informer has not listed DeviceStatus objects: read this one (below).
	case cur != nil && cur.owner == dev.UID:
		// Not written by this process, or written by someone else after it (an earlier run of this
		// cloudcore, another replica, a hand edit): compare with the informer's copy.
		if cur.sum == sum {
			record(cur.rv, "unchanged") // already what it should be: nothing to write
			return nil
		}
		body, done, err = m.patchStatus(ctx, dev, want, nil)
	case cur != nil:
		// Left by an earlier Device of the same name (or with no controlling owner): this Device takes
		// it over, other kinds of owners stay. Guarded by the copy's resourceVersion.
		owners := append([]metav1.OwnerReference{owner}, cur.others...)
		body, done, err = m.patchStatus(ctx, dev, want, map[string]any{"resourceVersion": strconv.FormatUint(cur.rv, 10), "ownerReferences": owners})
	default:
		body, done, err = m.createStatus(ctx, dev, want, owner)
	}
	if err != nil {
		m.metrics.deviceStatuses.WithLabelValues("error").Inc()
		return fmt.Errorf("devicestatus %s: %w", key, err)
	}
	if done {
		record(rvOfBody(body), "ok")
		return nil
	}
	// Not as the decision assumed (gone, there already, changed meanwhile): read it and write.
	for attempt := 0; ; attempt++ {
		cur := &v1beta1.DeviceStatus{}
		err := m.rest.Get().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).Name(dev.Name).Do(ctx).Into(cur)
		if err == nil && ownedBy(cur, owner) && statusSum(cur.Status) == sum {
			record(rvOf(cur), "unchanged") // already what it should be: nothing to write
			return nil
		}
		var res rest.Result
		switch {
		case apierrors.IsNotFound(err):
			obj := &v1beta1.DeviceStatus{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "DeviceStatus"},
				ObjectMeta: metav1.ObjectMeta{Name: dev.Name, Namespace: dev.Namespace, OwnerReferences: []metav1.OwnerReference{owner}},
				Status:     want,
			}
			res = m.rest.Post().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).
				Param("fieldManager", "kedge-devicecontroller").Body(obj).Do(ctx)
		case err == nil:
			// A DeviceStatus left by an earlier Device of the same name gets the current owner.
			owners := []metav1.OwnerReference{owner}
			for _, o := range cur.OwnerReferences {
				if !isDeviceOwner(o) {
					owners = append(owners, o)
				}
			}
			cur.OwnerReferences = owners
			ext := cur.Status.Extensions
			cur.Status = want
			cur.Status.Extensions = ext
			res = m.rest.Put().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).Name(dev.Name).
				Param("fieldManager", "kedge-devicecontroller").Body(cur).Do(ctx)
		}
		if err == nil || apierrors.IsNotFound(err) {
			body, err = res.Raw()
		}
		if err == nil {
			record(rvOfBody(body), "ok")
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

// patchStatus merge-patches the DeviceStatus's status to want (the extensions stay), and its metadata
// with meta when set. done is false when the object is gone or changed meanwhile (not found, or a
// conflict with the resourceVersion in meta): the caller reads it.
func (m *Module) patchStatus(ctx context.Context, dev *v1beta1.Device, want v1beta1.DeviceStatusStatus, meta map[string]any) (body []byte, done bool, err error) {
	p := map[string]any{"status": map[string]any{
		"twins": nilIfEmpty(len(want.Twins) == 0, want.Twins), "state": nilIfEmpty(want.State == "", want.State),
		"lastOnlineTime": nilIfEmpty(want.LastOnlineTime == "", want.LastOnlineTime),
		"conditions":     nilIfEmpty(len(want.Conditions) == 0, want.Conditions)}}
	if meta != nil {
		p["metadata"] = meta
	}
	patch, err := json.Marshal(p)
	if err != nil {
		return nil, false, err
	}
	body, err = m.rest.Patch(types.MergePatchType).Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).Name(dev.Name).
		Param("fieldManager", "kedge-devicecontroller").Body(patch).Do(ctx).Raw()
	switch {
	case err == nil:
		return body, true, nil
	case apierrors.IsNotFound(err):
		return nil, false, nil
	case apierrors.IsConflict(err):
		m.metrics.conflicts.Inc()
		return nil, false, nil
	}
	return nil, false, err
}

// createStatus creates the Device's DeviceStatus holding want; done is false when one exists already
// (the informer had not seen it yet): the caller reads it.
func (m *Module) createStatus(ctx context.Context, dev *v1beta1.Device, want v1beta1.DeviceStatusStatus, owner metav1.OwnerReference) (body []byte, done bool, err error) {
	obj := &v1beta1.DeviceStatus{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "DeviceStatus"},
		ObjectMeta: metav1.ObjectMeta{Name: dev.Name, Namespace: dev.Namespace, OwnerReferences: []metav1.OwnerReference{owner}},
		Status:     want,
	}
	body, err = m.rest.Post().Namespace(dev.Namespace).Resource(v1beta1.ResourceDeviceStatuses).
		Param("fieldManager", "kedge-devicecontroller").Body(obj).Do(ctx).Raw()
	switch {
	case err == nil:
		return body, true, nil
	case apierrors.IsAlreadyExists(err):
		return nil, false, nil
	}
	return nil, false, err
}

// rvOfBody is the resourceVersion of the object in an API answer (0 when it has none).
func rvOfBody(body []byte) uint64 {
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if json.Unmarshal(body, &o) != nil {
		return 0
	}
	v, _ := strconv.ParseUint(o.Metadata.ResourceVersion, 10, 64)
	return v
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
	key := ns + "/" + name
	defer m.lockMirror(key)()
	m.mirrorMu.Lock()
	delete(m.mirrored, key)
	m.mirrorMu.Unlock()
	err := m.rest.Delete().Namespace(ns).Resource(v1beta1.ResourceDeviceStatuses).Name(name).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("devicestatus %s/%s: %w", ns, name, err)
	}
	return nil
}

func ptrTrue() *bool { t := true; return &t }
