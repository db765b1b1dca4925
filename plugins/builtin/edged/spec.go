package edged

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// configError is a problem with the pod's input (a missing ConfigMap key, a bad field path): the
// container waits with reason CreateContainerConfigError and the message, and is retried.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, a ...any) error { return &configError{fmt.Sprintf(format, a...)} }

// specHash identifies a container spec; a container whose running instance carries another hash is
// restarted with the new spec.
func specHash(c *corev1.Container) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

const cpuPeriod = 100000 // µs, the CFS default

// linuxResources maps requests and limits to cgroup settings: CPU shares from the request (the
// limit when no request), CFS quota from the limit, the memory limit.
func linuxResources(c *corev1.Container) (*criv1.LinuxContainerResources, error) {
	for _, list := range []struct {
		name string
		rl   corev1.ResourceList
	}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
		for name, q := range list.rl {
			if q.Sign() < 0 {
				return nil, configErrorf("container %s: resources.%s.%s is negative (%s)", c.Name, list.name, name, q.String())
			}
		}
	}
	r := &criv1.LinuxContainerResources{CpuShares: 2}
	cpuReq, hasReq := c.Resources.Requests[corev1.ResourceCPU]
	cpuLim, hasLim := c.Resources.Limits[corev1.ResourceCPU]
	if !hasReq && hasLim {
		cpuReq, hasReq = cpuLim, true
	}
	if hasReq {
		r.CpuShares = max(2, cpuReq.MilliValue()*1024/1000)
	}
	if hasLim && !cpuLim.IsZero() {
		r.CpuPeriod = cpuPeriod
		r.CpuQuota = max(1000, cpuLim.MilliValue()*cpuPeriod/1000)
	}
	if mem, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryLimitInBytes = mem.Value()
	}
	return r, nil
}

// securityContext maps the container's (and the pod's) security context.
func securityContext(pod *corev1.Pod, c *corev1.Container) *criv1.LinuxContainerSecurityContext {
	sc := &criv1.LinuxContainerSecurityContext{NamespaceOptions: namespaceOptions(pod)}
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			sc.RunAsUser = &criv1.Int64Value{Value: *psc.RunAsUser}
		}
		if psc.RunAsGroup != nil {
			sc.RunAsGroup = &criv1.Int64Value{Value: *psc.RunAsGroup}
		}
		sc.SupplementalGroups = psc.SupplementalGroups
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			sc.RunAsUser = &criv1.Int64Value{Value: *csc.RunAsUser}
		}
		if csc.RunAsGroup != nil {
			sc.RunAsGroup = &criv1.Int64Value{Value: *csc.RunAsGroup}
		}
		if csc.Privileged != nil {
			sc.Privileged = *csc.Privileged
		}
		if csc.ReadOnlyRootFilesystem != nil {
			sc.ReadonlyRootfs = *csc.ReadOnlyRootFilesystem
		}
		if csc.AllowPrivilegeEscalation != nil {
			sc.NoNewPrivs = !*csc.AllowPrivilegeEscalation
		}
		if caps := csc.Capabilities; caps != nil {
			sc.Capabilities = &criv1.Capability{}
			for _, a := range caps.Add {
				sc.Capabilities.AddCapabilities = append(sc.Capabilities.AddCapabilities, capName(a))
			}
			for _, d := range caps.Drop {
				sc.Capabilities.DropCapabilities = append(sc.Capabilities.DropCapabilities, capName(d))
			}
		}
	}
	return sc
}

// capName accepts NET_ADMIN and CAP_NET_ADMIN alike; ALL stays ALL.
func capName(c corev1.Capability) string {
	s := strings.ToUpper(string(c))
	if s == "ALL" || strings.HasPrefix(s, "CAP_") {
		return s
	}
	return "CAP_" + s
}

func namespaceOptions(pod *corev1.Pod) *criv1.NamespaceOption {
	ns := &criv1.NamespaceOption{Network: criv1.NamespaceMode_POD, Pid: criv1.NamespaceMode_CONTAINER, Ipc: criv1.NamespaceMode_POD}
	if pod.Spec.HostNetwork {
		ns.Network = criv1.NamespaceMode_NODE
	}
	if pod.Spec.HostPID {
		ns.Pid = criv1.NamespaceMode_NODE
	} else if pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		ns.Pid = criv1.NamespaceMode_POD
	}
	if pod.Spec.HostIPC {
		ns.Ipc = criv1.NamespaceMode_NODE
	}
	return ns
}

// envSource reads the objects env refers to.
type envSource interface {
	object(ctx context.Context, typ, namespace, name string) (json.RawMessage, error)
}

// podEnv is what the downward API may read besides the pod itself.
type podEnv struct {
	nodeName, podIP, hostIP string
}

// containerEnv resolves env and envFrom in the order Kubernetes applies them: envFrom first, then
// env (a later name wins), with $(VAR) references expanded against what is defined before.
func containerEnv(ctx context.Context, src envSource, pod *corev1.Pod, c *corev1.Container, pe podEnv) ([]*criv1.KeyValue, map[string]string, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	cms := map[string]*corev1.ConfigMap{}
	secrets := map[string]*corev1.Secret{}
	getCM := func(name string, optional bool) (*corev1.ConfigMap, error) {
		if cm, ok := cms[name]; ok {
			return cm, nil
		}
		raw, err := src.object(ctx, "configmap", pod.Namespace, name)
		if err != nil {
			if optional {
				return nil, nil
			}
			return nil, configErrorf("configmap %q not found: %v", name, err)
		}
		var cm corev1.ConfigMap
		if err := json.Unmarshal(raw, &cm); err != nil {
			return nil, configErrorf("configmap %q: stored object is not a ConfigMap: %v", name, err)
		}
		cms[name] = &cm
		return &cm, nil
	}
	getSecret := func(name string, optional bool) (*corev1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		raw, err := src.object(ctx, "secret", pod.Namespace, name)
		if err != nil {
			if optional {
				return nil, nil
			}
			return nil, configErrorf("secret %q not found: %v", name, err)
		}
		var s corev1.Secret
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, configErrorf("secret %q: stored object is not a Secret: %v", name, err)
		}
		secrets[name] = &s
		return &s, nil
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := getCM(ef.ConfigMapRef.Name, isTrue(ef.ConfigMapRef.Optional))
			if err != nil {
				return nil, nil, err
			}
			if cm != nil {
				for _, k := range sortedKeys(cm.Data) {
					set(ef.Prefix+k, cm.Data[k])
				}
			}
		case ef.SecretRef != nil:
			s, err := getSecret(ef.SecretRef.Name, isTrue(ef.SecretRef.Optional))
			if err != nil {
				return nil, nil, err
			}
			if s != nil {
				keys := make([]string, 0, len(s.Data))
				for k := range s.Data {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					set(ef.Prefix+k, string(s.Data[k]))
				}
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vals))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm, err := getCM(ref.Name, isTrue(ref.Optional))
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			if cm == nil {
				continue
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if isTrue(ref.Optional) {
					continue
				}
				return nil, nil, configErrorf("env %s: key %q not found in configmap %q", e.Name, ref.Key, ref.Name)
			}
			set(e.Name, v)
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			s, err := getSecret(ref.Name, isTrue(ref.Optional))
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			if s == nil {
				continue
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if isTrue(ref.Optional) {
					continue
				}
				return nil, nil, configErrorf("env %s: key %q not found in secret %q", e.Name, ref.Key, ref.Name)
			}
			set(e.Name, string(v))
		case vf.FieldRef != nil:
			v, err := fieldValue(pod, vf.FieldRef.FieldPath, pe)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			v, err := resourceValue(pod, c, vf.ResourceFieldRef)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, v)
		default:
			return nil, nil, configErrorf("env %s: valueFrom names no source", e.Name)
		}
	}
	out := make([]*criv1.KeyValue, 0, len(order))
	for _, k := range order {
		out = append(out, &criv1.KeyValue{Key: k, Value: []byte(vals[k])})
	}
	return out, vals, nil
}

func isTrue(b *bool) bool { return b != nil && *b }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fieldValue is the downward API for env: the fields people use most.
func fieldValue(pod *corev1.Pod, path string, pe podEnv) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		if pod.Spec.NodeName != "" {
			return pod.Spec.NodeName, nil
		}
		return pe.nodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pe.podIP, nil
	case "status.podIPs":
		return pe.podIP, nil
	case "status.hostIP", "status.hostIPs":
		return pe.hostIP, nil
	}
	for _, p := range []struct {
		prefix string
		m      map[string]string
	}{{"metadata.labels['", pod.Labels}, {"metadata.annotations['", pod.Annotations}} {
		if strings.HasPrefix(path, p.prefix) && strings.HasSuffix(path, "']") {
			return p.m[strings.TrimSuffix(strings.TrimPrefix(path, p.prefix), "']")], nil
		}
	}
	return "", configErrorf("fieldRef %q is not supported (metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP)", path)
}

// resourceValue is resourceFieldRef: a request or limit of the container, in units of the divisor
// (rounded up, like Kubernetes).
func resourceValue(pod *corev1.Pod, c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		found := false
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				c, found = &pod.Spec.Containers[i], true
			}
		}
		if !found {
			return "", configErrorf("resourceFieldRef: container %q is not in the pod", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", configErrorf("resourceFieldRef %q: want limits.<name> or requests.<name>", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, has := list[corev1.ResourceName(name)]
	if !has {
		if kind == "limits" {
			// No limit: the node's allocatable, which is what the container may use.
			switch name {
			case "cpu":
				return strconv.Itoa(numCPU()), nil
			case "memory":
				return strconv.FormatInt(memTotal(), 10), nil
			}
		}
		return "0", nil
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	v := math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
	return strconv.FormatInt(int64(v), 10), nil
}

// expand replaces $(NAME) with a defined variable's value; $$ is a literal $; an undefined
// reference stays as written (as in Kubernetes).
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, vars map[string]string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, vars)
	}
	return out
}

// portMappings are the host ports the pod asks for.
func portMappings(pod *corev1.Pod) []*criv1.PortMapping {
	var out []*criv1.PortMapping
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 && !pod.Spec.HostNetwork {
				continue
			}
			proto := criv1.Protocol_TCP
			switch p.Protocol {
			case corev1.ProtocolUDP:
				proto = criv1.Protocol_UDP
			case corev1.ProtocolSCTP:
				proto = criv1.Protocol_SCTP
			}
			hp := p.HostPort
			if pod.Spec.HostNetwork {
				hp = p.ContainerPort
			}
			out = append(out, &criv1.PortMapping{Protocol: proto, ContainerPort: p.ContainerPort, HostPort: hp, HostIp: p.HostIP})
		}
	}
	return out
}

// validatePod finds what makes a pod impossible to run, before anything is created.
func validatePod(pod *corev1.Pod) error {
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = true
	}
	var errs []error
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	if len(pod.Spec.Containers) == 0 {
		errs = append(errs, errors.New("spec.containers is empty"))
	}
	seen := map[string]bool{}
	for _, c := range all {
		if c.Name == "" {
			errs = append(errs, errors.New("a container has no name"))
		}
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("container name %q is used twice", c.Name))
		}
		seen[c.Name] = true
		if c.Image == "" {
			errs = append(errs, fmt.Errorf("container %s: image is empty", c.Name))
		}
		for _, vm := range c.VolumeMounts {
			if !vols[vm.Name] {
				errs = append(errs, fmt.Errorf("container %s: volumeMount %q names no volume of the pod", c.Name, vm.Name))
			}
		}
		if _, err := linuxResources(&c); err != nil {
			errs = append(errs, err)
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if err := checkProbePort(&c, p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func checkProbePort(c *corev1.Container, p *corev1.Probe) error {
	if p == nil {
		return nil
	}
	var port *intOrString
	switch {
	case p.HTTPGet != nil:
		port = &intOrString{p.HTTPGet.Port.Type == 1, p.HTTPGet.Port.StrVal}
	case p.TCPSocket != nil:
		port = &intOrString{p.TCPSocket.Port.Type == 1, p.TCPSocket.Port.StrVal}
	}
	if port == nil || !port.isString {
		return nil
	}
	for _, cp := range c.Ports {
		if cp.Name == port.str {
			return nil
		}
	}
	return fmt.Errorf("container %s: probe port %q is not a named port of the container", c.Name, port.str)
}

type intOrString struct {
	isString bool
	str      string
}
