package volume

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

const defaultFileMode = 0o644

// payload builds the files of a configMap, secret, downwardAPI or projected volume.
func (m *Manager) payload(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (map[string]file, error) {
	b := &builder{m: m, ctx: ctx, pod: pod, vol: v.Name, files: map[string]file{}}
	switch {
	case v.ConfigMap != nil:
		s := v.ConfigMap
		mode, err := b.defaultMode(s.DefaultMode)
		if err != nil {
			return nil, err
		}
		err = b.configMap(s.Name, s.Items, mode, s.Optional)
		return b.files, err
	case v.Secret != nil:
		s := v.Secret
		mode, err := b.defaultMode(s.DefaultMode)
		if err != nil {
			return nil, err
		}
		err = b.secret(s.SecretName, s.Items, mode, s.Optional)
		return b.files, err
	case v.DownwardAPI != nil:
		s := v.DownwardAPI
		mode, err := b.defaultMode(s.DefaultMode)
		if err != nil {
			return nil, err
		}
		err = b.downward(s.Items, mode)
		return b.files, err
	case v.Projected != nil:
		s := v.Projected
		mode, err := b.defaultMode(s.DefaultMode)
		if err != nil {
			return nil, err
		}
		for i, src := range s.Sources {
			switch {
			case src.ConfigMap != nil:
				err = b.configMap(src.ConfigMap.Name, src.ConfigMap.Items, mode, src.ConfigMap.Optional)
			case src.Secret != nil:
				err = b.secret(src.Secret.Name, src.Secret.Items, mode, src.Secret.Optional)
			case src.DownwardAPI != nil:
				err = b.downward(src.DownwardAPI.Items, mode)
			case src.ServiceAccountToken != nil:
				err = b.token(src.ServiceAccountToken, mode)
			default:
				err = b.errf("projected source %d: unsupported (supported: configMap, secret, downwardAPI, serviceAccountToken)", i)
			}
			if err != nil {
				return nil, err
			}
		}
		return b.files, nil
	}
	return nil, b.errf("not a content volume")
}

type builder struct {
	m     *Manager
	ctx   context.Context
	pod   *corev1.Pod
	vol   string
	files map[string]file
}

func (b *builder) errf(format string, args ...any) error {
	return podErr(b.pod, b.vol, format, args...)
}

func (b *builder) defaultMode(p *int32) (os.FileMode, error) {
	if p == nil {
		return defaultFileMode, nil
	}
	return b.mode(*p, "defaultMode")
}

func (b *builder) mode(v int32, what string) (os.FileMode, error) {
	if v < 0 || v > 0o777 {
		return 0, b.errf("%s %#o is out of range (0 to 0777)", what, v)
	}
	return os.FileMode(v), nil
}

// add puts one file into the payload after checking its path stays inside the volume.
func (b *builder) add(p string, data []byte, mode os.FileMode, from string) error {
	clean, err := checkRelPath(p)
	if err != nil {
		return b.errf("%s: path %q: %v", from, p, err)
	}
	if _, dup := b.files[clean]; dup {
		return b.errf("%s: path %q is written twice", from, clean)
	}
	for q := range b.files {
		if strings.HasPrefix(q, clean+"/") || strings.HasPrefix(clean, q+"/") {
			return b.errf("%s: path %q conflicts with %q (a file cannot also be a directory)", from, clean, q)
		}
	}
	b.files[clean] = file{data: data, mode: mode}
	return nil
}

// checkRelPath accepts a relative path with no ".." element that does not start with "..".
func checkRelPath(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("empty")
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return "", fmt.Errorf("must be relative")
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("contains a NUL byte")
	case strings.HasPrefix(p, ".."):
		return "", fmt.Errorf("must not start with \"..\"")
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("must not contain \"..\"")
		}
	}
	clean := path.Clean(p)
	if clean == "." || strings.HasPrefix(clean, "..") {
		return "", fmt.Errorf("does not name a file")
	}
	return clean, nil
}

// get fetches an object; found=false (and no error) only for a missing optional object.
func (b *builder) get(typ, name string, optional *bool, into any) (bool, error) {
	if name == "" {
		return false, b.errf("%s with an empty name", typ)
	}
	raw, err := b.m.src.Get(b.ctx, typ, b.pod.Namespace, name)
	if err != nil {
		if IsNotFound(err) {
			if optional != nil && *optional {
				return false, nil
			}
			return false, b.errf("%s %q not found in namespace %q (not optional): %v", typ, name, b.pod.Namespace, err)
		}
		return false, b.errf("get %s %q: %v", typ, name, err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return false, b.errf("%s %q: decode: %v", typ, name, err)
	}
	return true, nil
}

func (b *builder) keys(typ, name string, data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode, optional *bool) error {
	from := fmt.Sprintf("%s %q", typ, name)
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := b.add(k, data[k], mode, from+" key "+k); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return b.errf("%s has no key %q (not optional)", from, it.Key)
		}
		fm := mode
		if it.Mode != nil {
			var err error
			if fm, err = b.mode(*it.Mode, fmt.Sprintf("%s key %q mode", from, it.Key)); err != nil {
				return err
			}
		}
		if err := b.add(it.Path, d, fm, fmt.Sprintf("%s key %q", from, it.Key)); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) configMap(name string, items []corev1.KeyToPath, mode os.FileMode, optional *bool) error {
	var cm corev1.ConfigMap
	found, err := b.get(TypeConfigMap, name, optional, &cm)
	if err != nil || !found {
		return err
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		if _, dup := data[k]; dup {
			return b.errf("configmap %q: key %q is in both data and binaryData", name, k)
		}
		data[k] = v
	}
	return b.keys(TypeConfigMap, name, data, items, mode, optional)
}

func (b *builder) secret(name string, items []corev1.KeyToPath, mode os.FileMode, optional *bool) error {
	var s corev1.Secret
	found, err := b.get(TypeSecret, name, optional, &s)
	if err != nil || !found {
		return err
	}
	data := make(map[string][]byte, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		data[k] = v
	}
	for k, v := range s.StringData { // as the API server would merge it
		data[k] = []byte(v)
	}
	return b.keys(TypeSecret, name, data, items, mode, optional)
}

// podTokens is the object the cloud (edgecontroller) sends as <ns>/serviceaccounttoken/<pod name>:
// the service-account tokens bound to that pod, one per audience and expiration its volumes ask for.
type podTokens struct {
	PodUID types.UID `json:"podUID"`
	Tokens []struct {
		Audience          string `json:"audience"`
		ExpirationSeconds int64  `json:"expirationSeconds"`
		Token             string `json:"token"`
	} `json:"tokens"`
}

func (b *builder) token(p *corev1.ServiceAccountTokenProjection, mode os.FileMode) error {
	name := b.pod.Namespace + "/" + b.pod.Name
	raw, err := b.m.src.Get(b.ctx, TypeServiceAccountToken, b.pod.Namespace, b.pod.Name)
	if err != nil {
		if IsNotFound(err) {
			return b.errf("no service account token for pod %s: the node has no object of type %s for it (the cloud issues one per pod): %v",
				name, TypeServiceAccountToken, err)
		}
		return b.errf("get %s %s: %v", TypeServiceAccountToken, name, err)
	}
	var pt podTokens
	if err := json.Unmarshal(raw, &pt); err != nil {
		return b.errf("%s %s: decode: %v", TypeServiceAccountToken, name, err)
	}
	if pt.PodUID != "" && pt.PodUID != b.pod.UID {
		return b.errf("%s %s is bound to pod uid %s, this pod is uid %s (an older pod of that name)", TypeServiceAccountToken, name, pt.PodUID, b.pod.UID)
	}
	exp := int64(3600)
	if p.ExpirationSeconds != nil {
		exp = *p.ExpirationSeconds
	}
	for _, t := range pt.Tokens {
		if t.Audience == p.Audience && t.ExpirationSeconds == exp {
			if t.Token == "" {
				return b.errf("%s %s: the token for audience %q is empty", TypeServiceAccountToken, name, p.Audience)
			}
			return b.add(p.Path, []byte(t.Token), mode, "serviceAccountToken")
		}
	}
	return b.errf("%s %s has no token for audience %q expiring after %ds (yet)", TypeServiceAccountToken, name, p.Audience, exp)
}

func (b *builder) downward(items []corev1.DownwardAPIVolumeFile, mode os.FileMode) error {
	for _, it := range items {
		from := fmt.Sprintf("downwardAPI item %q", it.Path)
		var val string
		var err error
		switch {
		case it.FieldRef != nil && it.ResourceFieldRef != nil:
			return b.errf("%s: fieldRef and resourceFieldRef are both set", from)
		case it.FieldRef != nil:
			val, err = podField(b.pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = resourceField(b.pod, it.ResourceFieldRef)
		default:
			return b.errf("%s: neither fieldRef nor resourceFieldRef is set", from)
		}
		if err != nil {
			return b.errf("%s: %v", from, err)
		}
		fm := mode
		if it.Mode != nil {
			if fm, err = b.mode(*it.Mode, from+" mode"); err != nil {
				return err
			}
		}
		if err := b.add(it.Path, []byte(val), fm, from); err != nil {
			return err
		}
	}
	return nil
}

// podField resolves the downward-API metadata fields a volume may expose.
func podField(pod *corev1.Pod, fp string) (string, error) {
	switch fp {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	for _, pre := range []string{"metadata.labels", "metadata.annotations"} {
		if strings.HasPrefix(fp, pre+"['") && strings.HasSuffix(fp, "']") {
			k := fp[len(pre)+2 : len(fp)-2]
			if pre == "metadata.labels" {
				return pod.Labels[k], nil
			}
			return pod.Annotations[k], nil
		}
	}
	return "", fmt.Errorf("fieldPath %q is not supported in a volume (metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['k'], metadata.annotations['k'])", fp)
}

// formatMap writes k="v" lines sorted by key, as the kubelet does.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return strings.Join(lines, "\n")
}

func resourceField(pod *corev1.Pod, r *corev1.ResourceFieldSelector) (string, error) {
	if r.ContainerName == "" {
		return "", fmt.Errorf("resourceFieldRef needs containerName in a volume")
	}
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == r.ContainerName {
			c = &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == r.ContainerName {
			c = &pod.Spec.InitContainers[i]
		}
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef: no container %q", r.ContainerName)
	}
	kind, res, ok := strings.Cut(r.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef: resource %q is not limits.<name> or requests.<name>", r.Resource)
	}
	name := corev1.ResourceName(res)
	var q resource.Quantity
	var set bool
	if kind == "limits" {
		q, set = c.Resources.Limits[name]
		if !set {
			return "", fmt.Errorf("resourceFieldRef: %s of container %q is not set (node-allocatable fallback is not supported)", r.Resource, c.Name)
		}
	} else {
		if q, set = c.Resources.Requests[name]; !set {
			q = c.Resources.Limits[name] // requests default to limits; else 0
		}
	}
	div := r.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	v := math.Ceil(q.AsApproximateFloat64() / div.AsApproximateFloat64())
	return fmt.Sprintf("%d", int64(v)), nil
}
