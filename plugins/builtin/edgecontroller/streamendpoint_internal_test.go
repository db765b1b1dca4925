package edgecontroller

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
)

// streamHost answers edgecontroller's stream endpoint queries as cloudstream would (or fails them
// with err) and counts them.
type streamHost struct {
	sdk.Host
	asked int
	ep    streamEndpoint
	err   error
}

func (h *streamHost) SendSync(_ context.Context, to string, m sdk.Message, _ time.Duration) (sdk.Message, error) {
	if to != streamModule || m.Route.Resource != streamEndpointResource {
		return sdk.Message{}, fmt.Errorf("unexpected query to %s: %s", to, m.String())
	}
	h.asked++
	if h.err != nil {
		return sdk.Message{}, h.err
	}
	return m.Reply(streamModule, h.ep)
}

// plannedHost is streamHost on a host that says whether cloudstream is one of its modules.
type plannedHost struct {
	*streamHost
	planned bool
}

func (h plannedHost) Planned(name string) bool       { return name == streamModule && h.planned }
func (h plannedHost) Started() <-chan struct{}       { return nil }
func (h *streamHost) Logger() *slog.Logger           { return slog.New(slog.DiscardHandler) }
func (h *streamHost) Metrics() prometheus.Registerer { return prometheus.NewRegistry() }

// Every node report needs cloudstream's endpoint: it is asked once per streamEndpointTTL, not per
// report, and an answer not worth keeping (cloudstream not running, a timeout) is asked again.
func TestCloudstreamsEndpointIsAskedOncePerTTLNotForEveryNodeReport(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ep        streamEndpoint
		err       error
		wantAsked int
		want      streamEndpoint
		planned   *bool // the host says whether cloudstream is one of its modules; nil: it cannot say
	}{
		{"advertised endpoint", streamEndpoint{Address: "10.0.0.1", Port: 10350}, nil, 1, streamEndpoint{Address: "10.0.0.1", Port: 10350}, nil},
		{"cloudstream without advertiseAddress", streamEndpoint{}, nil, 1, streamEndpoint{}, nil},
		{"no cloudstream on a host that cannot say", streamEndpoint{}, sdk.ErrUnknownModule, 5, streamEndpoint{}, nil},
		{"no cloudstream on the host", streamEndpoint{}, sdk.ErrUnknownModule, 1, streamEndpoint{}, new(false)},
		{"cloudstream not running yet (starting or being swapped)", streamEndpoint{}, sdk.ErrUnknownModule, 5, streamEndpoint{}, new(true)},
		{"cloudstream slow to answer", streamEndpoint{}, context.DeadlineExceeded, 5, streamEndpoint{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &streamHost{ep: tc.ep, err: tc.err}
			m := &Module{host: h}
			if tc.planned != nil {
				m.host = plannedHost{h, *tc.planned}
			}
			for range 5 {
				if got := m.streamEndpoint(context.Background()); got != tc.want {
					t.Fatalf("endpoint %+v, want %+v", got, tc.want)
				}
			}
			if h.asked != tc.wantAsked {
				t.Fatalf("cloudstream asked %d times for 5 reports, want %d", h.asked, tc.wantAsked)
			}
			if tc.wantAsked == 1 && tc.err == nil { // an answer older than the TTL is asked for again
				m.endpoint.Store(&cachedEndpoint{ep: tc.want, at: time.Now().Add(-streamEndpointTTL - time.Second)})
				h.ep = streamEndpoint{Address: "10.0.0.2", Port: 10351}
				if got := m.streamEndpoint(context.Background()); got != h.ep || h.asked != 2 {
					t.Fatalf("after the TTL: endpoint %+v after %d queries, want %+v after 2", got, h.asked, h.ep)
				}
			}
		})
	}
}

func BenchmarkReportFingerprint(b *testing.B) {
	r := NodeReport{NodeName: "edge-00001", Capacity: map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"},
		KernelVersion: "6.1.0", OS: "linux", Architecture: "amd64", OSImage: "Debian GNU/Linux 12", Addresses: []string{"192.0.2.7"},
		BootTime: time.Unix(1000, 0), Allocatable: map[string]string{"cpu": "4", "memory": "7Gi"},
		Conditions: []ReportCondition{{Type: "MemoryPressure", Status: "False", Reason: "KubeletHasSufficientMemory", Message: "ok"},
			{Type: "DiskPressure", Status: "False", Reason: "KubeletHasNoDiskPressure", Message: "ok"}},
		MachineID: "m", BootID: "b", ContainerRuntimeVersion: "containerd://2.0", Version: "v1.0.0"}
	ep := streamEndpoint{Address: "10.0.0.1", Port: 10350}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.fingerprint(ep)
	}
}
