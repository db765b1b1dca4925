package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Mounts turns container's VolumeMounts into CRI mounts, given the paths Setup returned. subPath and
// subPathExpr (expanded from the container's env values and downward-API fields) must stay inside
// the volume, symlinks included; a missing subPath directory is created. configMap, secret,
// downwardAPI and projected volumes are always mounted read-only.
func (m *Manager) Mounts(pod *corev1.Pod, c *corev1.Container, paths map[string]string) ([]*runtimeapi.Mount, error) {
	if pod == nil || c == nil {
		return nil, errors.New("volume: Mounts needs a pod and a container")
	}
	vols := make(map[string]*corev1.Volume, len(pod.Spec.Volumes))
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	mountErr := func(vm *corev1.VolumeMount, format string, args ...any) error {
		return &Error{Pod: pod.Namespace + "/" + pod.Name, Volume: vm.Name,
			Err: fmt.Errorf("container %q mount at %q: %s", c.Name, vm.MountPath, fmt.Sprintf(format, args...))}
	}
	seen := map[string]bool{}
	var out []*runtimeapi.Mount
	for i := range c.VolumeMounts {
		vm := &c.VolumeMounts[i]
		v, ok := vols[vm.Name]
		if !ok {
			return nil, mountErr(vm, "the pod has no volume %q", vm.Name)
		}
		base, ok := paths[vm.Name]
		if !ok || base == "" {
			return nil, mountErr(vm, "volume %q is not set up", vm.Name)
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			return nil, mountErr(vm, "mountPath must be absolute")
		}
		cp := filepath.Clean(vm.MountPath)
		if seen[cp] {
			return nil, mountErr(vm, "mountPath %q is used twice", cp)
		}
		seen[cp] = true
		host := base
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			if sub != "" {
				return nil, mountErr(vm, "subPath and subPathExpr are both set")
			}
			var err error
			if sub, err = expandSubPath(pod, c, vm.SubPathExpr); err != nil {
				return nil, mountErr(vm, "subPathExpr %q: %v", vm.SubPathExpr, err)
			}
		}
		if sub != "" {
			var err error
			if host, err = subPathIn(base, sub); err != nil {
				return nil, mountErr(vm, "subPath %q: %v", sub, err)
			}
		}
		prop := runtimeapi.MountPropagation_PROPAGATION_PRIVATE
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationNone:
			case corev1.MountPropagationHostToContainer:
				prop = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
			case corev1.MountPropagationBidirectional:
				prop = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
			default:
				return nil, mountErr(vm, "mountPropagation %q is not supported", *vm.MountPropagation)
			}
		}
		out = append(out, &runtimeapi.Mount{
			ContainerPath: cp,
			HostPath:      host,
			Readonly:      vm.ReadOnly || isContentVolume(v),
			Propagation:   prop,
		})
	}
	return out, nil
}

// subPathIn resolves sub inside base (creating missing directories) and refuses anything that ends
// up outside base, through ".." or a symlink.
func subPathIn(base, sub string) (string, error) {
	clean, err := checkRelPath(sub)
	if err != nil {
		return "", err
	}
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return "", fmt.Errorf("resolve volume path: %w", err)
	}
	inside := func(p string) bool { return p == realBase || strings.HasPrefix(p, realBase+string(filepath.Separator)) }
	cur := realBase
	parts := strings.Split(clean, "/")
	for i, el := range parts {
		next := filepath.Join(cur, el)
		fi, err := os.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(next, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return "", fmt.Errorf("create %s: %w", strings.Join(parts[:i+1], "/"), err)
			}
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			r, err := filepath.EvalSymlinks(next)
			if err != nil {
				return "", fmt.Errorf("resolve %s: %w", strings.Join(parts[:i+1], "/"), err)
			}
			if !inside(r) {
				return "", fmt.Errorf("%s is a symlink leading outside the volume", strings.Join(parts[:i+1], "/"))
			}
			next = r
		}
		cur = next
	}
	r, err := filepath.EvalSymlinks(cur)
	if err != nil {
		return "", err
	}
	if !inside(r) {
		return "", fmt.Errorf("leads outside the volume")
	}
	return r, nil
}

// expandSubPath expands $(VAR) from the container's env (plain values and downward-API fields);
// $$ is a literal $. An unknown variable is an error.
func expandSubPath(pod *corev1.Pod, c *corev1.Container, expr string) (string, error) {
	vars := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			if v, ok := envField(pod, e.ValueFrom.FieldRef.FieldPath); ok {
				vars[e.Name] = v
			}
		}
	}
	var b strings.Builder
	for i := 0; i < len(expr); i++ {
		if expr[i] != '$' || i+1 >= len(expr) {
			b.WriteByte(expr[i])
			continue
		}
		switch expr[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(expr[i+2:], ')')
			if end < 0 {
				return "", fmt.Errorf("unterminated $(")
			}
			name := expr[i+2 : i+2+end]
			v, ok := vars[name]
			if !ok {
				return "", fmt.Errorf("$(%s) is not an env variable of the container with a value or a supported fieldRef", name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}

func envField(pod *corev1.Pod, fp string) (string, bool) {
	switch fp {
	case "spec.nodeName":
		return pod.Spec.NodeName, true
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, true
	case "status.podIP":
		return pod.Status.PodIP, true
	case "status.hostIP":
		return pod.Status.HostIP, true
	}
	v, err := podField(pod, fp)
	return v, err == nil
}
