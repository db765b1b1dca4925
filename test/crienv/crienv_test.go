package crienv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/test/crienv"
)

// The provisioned containerd runs real containers through CRI, on the host network and on the
// bridge network (which gives the pod its own IP), from the locally built images.
func TestProvisionedContainerdRunsBusyboxThroughCRI(t *testing.T) {
	_, c := crienv.Start(t)
	for _, tt := range []struct {
		name        string
		hostNetwork bool
	}{{"host network", true}, {"bridge network", false}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			labels := map[string]string{"kedge.test": "crienv", "case": strings.ReplaceAll(tt.name, " ", "-")}
			t.Cleanup(func() { _ = c.RemoveSandboxes(context.Background(), labels) })
			mode := runtimeapi.NamespaceMode_POD
			if tt.hostNetwork {
				mode = runtimeapi.NamespaceMode_NODE
			}
			cfg := &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "crienv-" + labels["case"], Namespace: "test", Uid: "uid-" + labels["case"]},
				Labels:   labels,
				Linux:    &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: mode}}},
			}
			if !tt.hostNetwork {
				cfg.Hostname = "crienv"
			}
			sb, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			st, err := c.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId})
			if err != nil {
				t.Fatal(err)
			}
			if !tt.hostNetwork && !strings.HasPrefix(st.Status.GetNetwork().GetIp(), "10.88.") {
				t.Fatalf("bridge pod IP %q, want one from 10.88.0.0/16", st.Status.GetNetwork().GetIp())
			}
			ctr, err := c.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
				Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: crienv.Busybox},
					Command: []string{"sh", "-c", "echo hello; exit 3"}, LogPath: "c.log"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
				t.Fatal(err)
			}
			for {
				s, err := c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr.ContainerId})
				if err != nil {
					t.Fatal(err)
				}
				if s.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
					if s.Status.ExitCode != 3 {
						t.Fatalf("exit code %d, want 3", s.Status.ExitCode)
					}
					return
				}
				select {
				case <-ctx.Done():
					t.Fatalf("container did not exit: %v", s.Status.State)
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
}
