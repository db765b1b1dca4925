package edgestream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels edged sets on its containers (plugins/builtin/edged/cri.go).
const (
	labelManaged       = "kedge.io/managed"
	managedValue       = "edged"
	labelNode          = "kedge.io/node"
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelContainerName = "io.kubernetes.container.name"
)

// runtime is what a session needs from the container runtime.
type runtime interface {
	// find returns the ID of the newest (previous: the one before it) container of that name in
	// the pod, or a statusError saying what is missing.
	find(ctx context.Context, ns, pod, container string, previous bool) (string, error)
	// logPath returns the container's log file and whether it is running.
	logPath(ctx context.Context, id string) (string, bool, error)
	// execURL returns the runtime's streaming URL for an exec.
	execURL(ctx context.Context, id string, cmd []string, tty, stdin, stdout, stderr bool) (string, error)
	// attachURL returns the runtime's streaming URL for an attach to the container's stdio.
	attachURL(ctx context.Context, id string, tty, stdin, stdout, stderr bool) (string, error)
	// sandbox returns the ID of the pod's ready sandbox (edged's, for this node), or a statusError.
	sandbox(ctx context.Context, ns, pod string) (string, error)
	// portForwardURL returns the runtime's streaming URL for a port-forward into a sandbox.
	portForwardURL(ctx context.Context, sandboxID string) (string, error)
}

type criRuntime struct {
	node string // only containers edged made for this node are served
	conn *grpc.ClientConn
	rt   criv1.RuntimeServiceClient
}

func dialCRI(endpoint, node string) (*criRuntime, error) {
	path, _ := strings.CutPrefix(endpoint, "unix://") // its form is checked by Validate
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, fmt.Errorf("criEndpoint %q: %w", endpoint, err)
	}
	return &criRuntime{node: node, conn: conn, rt: criv1.NewRuntimeServiceClient(conn)}, nil
}

func (r *criRuntime) close() error { return r.conn.Close() }

func (r *criRuntime) find(ctx context.Context, ns, pod, container string, previous bool) (string, error) {
	resp, err := r.rt.ListContainers(ctx, &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{
		LabelSelector: map[string]string{labelManaged: managedValue, labelNode: r.node, labelPodNamespace: ns, labelPodName: pod}}})
	if err != nil {
		return "", refuse(http.StatusInternalServerError, "listing the containers of pod %s/%s: %v", ns, pod, err)
	}
	if len(resp.Containers) == 0 {
		return "", refuse(http.StatusNotFound, "pod %s/%s has no containers on node %s", ns, pod, r.node)
	}
	var same []*criv1.Container
	names := map[string]bool{}
	for _, c := range resp.Containers {
		names[c.Labels[labelContainerName]] = true
		if c.Labels[labelContainerName] == container {
			same = append(same, c)
		}
	}
	if len(same) == 0 {
		var have []string
		for n := range names {
			have = append(have, n)
		}
		sort.Strings(have)
		return "", refuse(http.StatusNotFound, "container %q not found in pod %s/%s (it has %s)", container, ns, pod, strings.Join(have, ", "))
	}
	sort.Slice(same, func(i, j int) bool { return same[i].CreatedAt > same[j].CreatedAt })
	if previous {
		if len(same) < 2 {
			return "", refuse(http.StatusNotFound, "previous terminated container %q in pod %s/%s not found", container, ns, pod)
		}
		return same[1].Id, nil
	}
	return same[0].Id, nil
}

func (r *criRuntime) logPath(ctx context.Context, id string) (string, bool, error) {
	resp, err := r.rt.ContainerStatus(ctx, &criv1.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return "", false, refuse(http.StatusInternalServerError, "status of container %s: %v", id, err)
	}
	p := resp.Status.LogPath
	if p == "" {
		return "", false, refuse(http.StatusNotFound, "container %s has no log file", id)
	}
	if !filepath.IsAbs(p) {
		return "", false, refuse(http.StatusInternalServerError, "container %s: log path %q is not absolute", id, p)
	}
	return p, resp.Status.State == criv1.ContainerState_CONTAINER_RUNNING, nil
}

func (r *criRuntime) execURL(ctx context.Context, id string, cmd []string, tty, stdin, stdout, stderr bool) (string, error) {
	resp, err := r.rt.Exec(ctx, &criv1.ExecRequest{ContainerId: id, Cmd: cmd, Tty: tty, Stdin: stdin, Stdout: stdout, Stderr: stderr && !tty})
	if err != nil {
		return "", err
	}
	return resp.Url, nil
}

func (r *criRuntime) attachURL(ctx context.Context, id string, tty, stdin, stdout, stderr bool) (string, error) {
	resp, err := r.rt.Attach(ctx, &criv1.AttachRequest{ContainerId: id, Tty: tty, Stdin: stdin, Stdout: stdout, Stderr: stderr && !tty})
	if err != nil {
		return "", err
	}
	return resp.Url, nil
}

func (r *criRuntime) sandbox(ctx context.Context, ns, pod string) (string, error) {
	resp, err := r.rt.ListPodSandbox(ctx, &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{
		LabelSelector: map[string]string{labelManaged: managedValue, labelNode: r.node, labelPodNamespace: ns, labelPodName: pod}}})
	if err != nil {
		return "", refuse(http.StatusInternalServerError, "listing the sandboxes of pod %s/%s: %v", ns, pod, err)
	}
	var ready []*criv1.PodSandbox
	for _, sb := range resp.Items {
		if sb.State == criv1.PodSandboxState_SANDBOX_READY {
			ready = append(ready, sb)
		}
	}
	if len(ready) == 0 {
		return "", refuse(http.StatusNotFound, "pod %s/%s has no running sandbox on node %s (%d not ready)", ns, pod, r.node, len(resp.Items))
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].CreatedAt > ready[j].CreatedAt })
	return ready[0].Id, nil
}

func (r *criRuntime) portForwardURL(ctx context.Context, sandboxID string) (string, error) {
	resp, err := r.rt.PortForward(ctx, &criv1.PortForwardRequest{PodSandboxId: sandboxID})
	if err != nil {
		return "", err
	}
	return resp.Url, nil
}
