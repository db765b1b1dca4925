package devicecontroller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// Credentials from Secrets (a Kedge addition; KubeEdge v1.23 has no field for them). A top-level
// value of a Device's spec.protocol.configData may be a reference to one key of a Secret in the
// Device's namespace, in the shape of a pod's env valueFrom.secretKeyRef:
//
//	"password": {"secretKeyRef": {"name": "plc-login", "key": "password"}}
//
// The Device in the API holds only the reference. The copy sent to the one node the Device is bound
// to carries the key's value beside it ({"secretKeyRef": {...}, "value": "..."}), so the Secret
// reaches that node and no other, inside the Device it belongs to; a "value" written into the API
// object is dropped (only a Secret fills it). A missing Secret or key leaves the value out (the
// mapper then reports the device offline with reason CredentialsMissing) and raises a Warning Event
// SecretMissing on the Device. A change of the Secret re-sends the Device to its node. The copy's
// resourceVersion is the largest of the Device's and its Secrets' (etcd's revisions are one counter),
// so the edge stores a newer Secret and its inventory says which version it holds. Values are never
// logged: logs and Events name the Secret and key only.

// secretIndex indexes devices by "namespace/name" of each Secret their configData references.
const secretIndex = "secretKeyRef"

// secretRef is one configData field's reference.
type secretRef struct{ field, name, key string }

// secretRefs lists the references in d's spec.protocol.configData (sorted by field).
func secretRefs(d *v1beta1.Device) []secretRef {
	if d.Spec.Protocol.ConfigData == nil {
		return nil
	}
	var out []secretRef
	for field, v := range d.Spec.Protocol.ConfigData.Data {
		obj, ok := v.(map[string]any)
		if !ok {
			continue
		}
		ref, ok := obj["secretKeyRef"].(map[string]any)
		if !ok {
			continue
		}
		name, _ := ref["name"].(string)
		key, _ := ref["key"].(string)
		if name == "" || key == "" {
			continue // the mapper refuses it, naming the field
		}
		out = append(out, secretRef{field: field, name: name, key: key})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].field < out[j].field })
	return out
}

func secretIndexFunc(obj any) ([]string, error) {
	d, ok := obj.(*v1beta1.Device)
	if !ok {
		return nil, nil
	}
	var keys []string
	for _, r := range secretRefs(d) {
		keys = append(keys, d.Namespace+"/"+r.name)
	}
	return keys, nil
}

// watchSecrets starts the Secret informer; a changed Secret re-syncs the devices referencing it.
func (m *Module) watchSecrets() (cache.SharedIndexInformer, error) {
	f := informers.NewSharedInformerFactory(m.client, 0)
	inf := f.Core().V1().Secrets().Informer()
	m.secrets = corelisters.NewSecretLister(inf.GetIndexer())
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		devs, _ := m.devInf.GetIndexer().ByIndex(secretIndex, s.Namespace+"/"+s.Name)
		for _, o := range devs {
			d := o.(*v1beta1.Device)
			m.ctl.Queue.Add(item{Type: TypeDevice, Namespace: d.Namespace, Name: d.Name})
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue})
	return inf, err
}

// edgeCopy is what d's node is sent: d itself, or (when its configData references Secrets) a copy
// with their values, the largest resourceVersion of them all, and a fingerprint covering the values
// (a digest, not the values). missing names the references that could not be resolved.
func (m *Module) edgeCopy(d *v1beta1.Device) (out *v1beta1.Device, fp string, rv uint64, missing []string) {
	refs := secretRefs(d)
	fp, rv = fingerprint(d), rvOf(d)
	if len(refs) == 0 {
		return d, fp, rv, nil
	}
	out = d.DeepCopy()
	h := sha256.New()
	for _, r := range refs {
		obj := out.Spec.Protocol.ConfigData.Data[r.field].(map[string]any)
		delete(obj, "value")
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", r.field, r.name, r.key)
		var s *corev1.Secret
		var err error
		if m.secrets != nil {
			s, err = m.secrets.Secrets(d.Namespace).Get(r.name)
		}
		if m.secrets == nil || err != nil {
			missing = append(missing, fmt.Sprintf("%s: Secret %s/%s does not exist", r.field, d.Namespace, r.name))
			continue
		}
		val, ok := s.Data[r.key]
		if !ok {
			if sv, ok2 := s.StringData[r.key]; ok2 {
				val, ok = []byte(sv), true
			}
		}
		if !ok {
			missing = append(missing, fmt.Sprintf("%s: Secret %s/%s has no key %q", r.field, d.Namespace, r.name, r.key))
			continue
		}
		obj["value"] = string(val)
		h.Write(val)
		h.Write([]byte{0})
		rv = max(rv, rvOf(s))
	}
	if rv != rvOf(d) {
		out.ResourceVersion = strconv.FormatUint(rv, 10)
	}
	return out, fp + "\x00secrets:" + hex.EncodeToString(h.Sum(nil)), rv, missing
}

// warnMissingSecrets logs and raises a Warning Event for references that could not be resolved.
func (m *Module) warnMissingSecrets(ctx context.Context, d *v1beta1.Device, missing []string) {
	if len(missing) == 0 {
		return
	}
	msg := "credentials not sent to node " + d.Spec.NodeName + ": " + strings.Join(missing, "; ") + " (the device's node gets them when the Secret is created or updated)"
	m.metrics.secretsMissing.Inc()
	m.host.Logger().Warn("device references a missing Secret key", "device", d.Namespace+"/"+d.Name, "missing", strings.Join(missing, "; "))
	m.warn(ctx, d, "SecretMissing", msg)
}
