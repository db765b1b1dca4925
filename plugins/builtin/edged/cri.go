package edged

import (
	"context"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels edged sets on every sandbox and container it creates. The io.kubernetes.* names are the
// conventional ones (crictl shows them); kedge.io/managed tells edged's objects from anybody else's.
const (
	labelManaged       = "kedge.io/managed"
	managedValue       = "edged"
	labelNode          = "kedge.io/node" // the node whose edged made it: edged removes only its own orphans
	labelPodUID        = "io.kubernetes.pod.uid"
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelContainerName = "io.kubernetes.container.name"
	labelInit          = "kedge.io/init"

	annotationHash = "kedge.io/container-hash"
	// The kubelet's name for a container's restart count: it survives edgecore restarts and sandbox
	// recreation (the next instance counts on from the newest one in any sandbox of the pod).
	annotationRestartCount    = "io.kubernetes.container.restartCount"
	annotationRestartCountOld = "kedge.io/restart-count" // read from containers older edged versions made
	annotationGrace           = "kedge.io/termination-grace-seconds"
)

type criClient struct {
	conn *grpc.ClientConn
	rt   criv1.RuntimeServiceClient
	img  criv1.ImageServiceClient
}

// dial makes the CRI client. The connection is made lazily, so a runtime that starts after edged
// is found by the first call that needs it.
func dial(endpoint string) (*criClient, error) {
	target := endpoint
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
	case strings.HasPrefix(endpoint, "/"):
		target = "unix://" + endpoint
	default:
		return nil, fmt.Errorf("criEndpoint %q: want unix:///path/to.sock or an absolute socket path", endpoint)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("criEndpoint %q: %w", endpoint, err)
	}
	return &criClient{conn: conn, rt: criv1.NewRuntimeServiceClient(conn), img: criv1.NewImageServiceClient(conn)}, nil
}

func (r *criClient) close() error { return r.conn.Close() }

// removeSandbox stops (giving its containers graceSeconds) and removes a sandbox and its containers.
func (m *Module) removeSandbox(ctx context.Context, id string, graceSeconds int64) error {
	cs, err := m.cri.rt.ListContainers(ctx, &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{PodSandboxId: id}})
	if err != nil {
		return m.criErr("ListContainers", err)
	}
	for _, c := range cs.Containers {
		if c.State == criv1.ContainerState_CONTAINER_RUNNING {
			if _, err := m.cri.rt.StopContainer(ctx, &criv1.StopContainerRequest{ContainerId: c.Id, Timeout: graceSeconds}); err != nil {
				return m.criErr("StopContainer", err)
			}
		}
	}
	if _, err := m.cri.rt.StopPodSandbox(ctx, &criv1.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return m.criErr("StopPodSandbox", err)
	}
	if _, err := m.cri.rt.RemovePodSandbox(ctx, &criv1.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return m.criErr("RemovePodSandbox", err)
	}
	return nil
}

func (m *Module) criErr(call string, err error) error {
	m.metrics.criErrors.WithLabelValues(call).Inc()
	return fmt.Errorf("%s: %w", call, err)
}

func nanoTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// firstHostIP is the first non-loopback IPv4 address of the host, else "".
func firstHostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

func numCPU() int { return goruntime.NumCPU() }

// memTotal is the host's memory in bytes (MemTotal of /proc/meminfo), 0 if unknown.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
