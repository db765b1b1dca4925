package edged_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edged"
)

// criCounter wraps the real CRI runtime client and counts the read calls edged makes: the shared
// relists (a list filtered by kedge.io/managed only) apart from the calls made for one pod.
type criCounter struct {
	criv1.RuntimeServiceClient
	mu               sync.Mutex
	relistSandboxes  int // ListPodSandbox for all pods
	relistContainers int // ListContainers for all pods
	perPod           int // ListPodSandbox/ListContainers for one pod, ContainerStatus, PodSandboxStatus
}

func (c *criCounter) count(sel map[string]string, all *int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, onePod := sel["io.kubernetes.pod.uid"]; !onePod && len(sel) == 1 {
		*all++
		return
	}
	c.perPod++
}

func (c *criCounter) ListPodSandbox(ctx context.Context, in *criv1.ListPodSandboxRequest, opts ...grpc.CallOption) (*criv1.ListPodSandboxResponse, error) {
	c.count(in.GetFilter().GetLabelSelector(), &c.relistSandboxes)
	return c.RuntimeServiceClient.ListPodSandbox(ctx, in, opts...)
}

func (c *criCounter) ListContainers(ctx context.Context, in *criv1.ListContainersRequest, opts ...grpc.CallOption) (*criv1.ListContainersResponse, error) {
	c.count(in.GetFilter().GetLabelSelector(), &c.relistContainers)
	return c.RuntimeServiceClient.ListContainers(ctx, in, opts...)
}

func (c *criCounter) ContainerStatus(ctx context.Context, in *criv1.ContainerStatusRequest, opts ...grpc.CallOption) (*criv1.ContainerStatusResponse, error) {
	c.count(nil, nil)
	return c.RuntimeServiceClient.ContainerStatus(ctx, in, opts...)
}

func (c *criCounter) PodSandboxStatus(ctx context.Context, in *criv1.PodSandboxStatusRequest, opts ...grpc.CallOption) (*criv1.PodSandboxStatusResponse, error) {
	c.count(nil, nil)
	return c.RuntimeServiceClient.PodSandboxStatus(ctx, in, opts...)
}

type criCounts struct{ relists, relistContainers, perPod int }

func (c *criCounter) counts() criCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return criCounts{c.relistSandboxes, c.relistContainers, c.perPod}
}

// With N idle running pods, each status period costs one ListPodSandbox and one ListContainers for
// all of them, and no CRI call for any single pod: the cost of watching the runtime does not grow
// with the number of pods (before the shared relist every pod's worker made three or more calls per
// period).
func TestIdlePodsCostOneSharedRelistPerStatusPeriodWhateverTheirNumber(t *testing.T) {
	counter := &criCounter{}
	edged.SetRuntimeWrapper(func(rt criv1.RuntimeServiceClient) criv1.RuntimeServiceClient {
		counter.RuntimeServiceClient = rt
		return counter
	})
	t.Cleanup(func() { edged.SetRuntimeWrapper(nil) })
	r := newRig(t, map[string]any{"syncPeriod": "10m"})
	const n = 6
	var pods []*corev1.Pod
	for range n {
		pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
		r.run(pod)
		pods = append(pods, pod)
	}
	for _, pod := range pods {
		r.waitStatus(pod.Name, "Running", 120*time.Second, func(s corev1.PodStatus) bool {
			return s.Phase == corev1.PodRunning && containerStatus(s, "main").State.Running != nil
		})
	}
	waitRelists := func(k int) {
		from := counter.counts().relists
		r.eventually("relists", 120*time.Second, func() bool { return counter.counts().relists >= from+k })
	}
	waitRelists(5) // the syncs the start woke are over
	before := counter.counts()
	const rounds = 20
	waitRelists(rounds)
	after := counter.counts()
	relists, lists, perPod := after.relists-before.relists, after.relistContainers-before.relistContainers, after.perPod-before.perPod
	t.Logf("%d idle pods, %d relists: %d ListContainers for all pods, %d calls for single pods", n, relists, lists, perPod)
	if lists > relists+1 || lists < relists-1 {
		t.Errorf("%d ListContainers for all pods in %d relists: want one each", lists, relists)
	}
	// A worker polling its pod would make at least one call per period: n*relists here.
	if perPod >= relists {
		t.Errorf("%d CRI calls for single pods in %d relists with %d idle pods: the workers still poll the runtime", perPod, relists, n)
	}
}
