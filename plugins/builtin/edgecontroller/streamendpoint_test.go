package edgecontroller_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

func hostname(n *corev1.Node) []string {
	var out []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeHostName {
			out = append(out, a.Address)
		}
	}
	return out
}

// With cloudstream running and advertising an address, an edge node's Hostname address and kubelet
// port point the API server at cloudstream; without an advertised address, or without cloudstream,
// the node keeps its own name as Hostname and no kubelet port.
func TestEdgeNodeAdvertisesCloudstreamAsItsKubeletEndpointOnlyWhenConfigured(t *testing.T) {
	if ctrlrig.Env == nil {
		t.Skip("needs the control plane (not with -short)")
	}
	for _, tc := range []struct {
		name          string
		withStream    bool
		advertise     string
		wantHostname  string // "" : the node's own name
		wantPortIsSet bool
	}{
		{"cloudstream advertising 127.0.0.1", true, "127.0.0.1", "127.0.0.1", true},
		{"cloudstream without advertiseAddress", true, "", "", false},
		{"no cloudstream", false, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, _ := sdk.Lookup(edgecontroller.Name)
			opts := []sdktest.Option{sdktest.Capture("cloudhub")}
			if tc.withStream {
				sinfo, _ := sdk.Lookup(cloudstream.Name)
				pkiDir := t.TempDir()
				if _, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: pkiDir}); err != nil { // cloudhub's
					t.Fatal(err)
				}
				opts = append(opts, sdktest.Beside(sinfo, map[string]any{"streamAddress": "127.0.0.1:0", "tunnelAddress": "127.0.0.1:0",
					"advertiseAddress": tc.advertise, "pkiDir": pkiDir, "kubeconfig": ctrlrig.Env.Kubeconfig,
					"clientCAFile": filepath.Join(pkiDir, "ca.crt")})) // any CA: only the advertised endpoint is checked
			}
			h := sdktest.Run(t, info, map[string]any{"kubeconfig": ctrlrig.Env.Kubeconfig, "inventoryWait": "300ms", "sendServices": false}, opts...)
			node := "stream-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			m := message.New("cloudhub", "resource", message.OpUpdate, message.Resource{Node: node, Namespace: "default", Type: "nodestatus", Name: node}.Cloud())
			m, _ = m.WithContent(edgecontroller.NodeReport{NodeName: node, Capacity: map[string]string{"cpu": "1"}, Addresses: []string{"192.0.2.9"}})
			resp, err := h.SendSync(m, 20e9)
			if err != nil || resp.Route.Operation == message.OpError {
				t.Fatalf("report: %v %s", err, resp.Content)
			}
			n := getNode(t, node)
			want := tc.wantHostname
			if want == "" {
				want = node
			}
			if got := hostname(n); len(got) != 1 || got[0] != want {
				t.Fatalf("Hostname addresses %v, want [%s]", got, want)
			}
			if port := n.Status.DaemonEndpoints.KubeletEndpoint.Port; (port != 0) != tc.wantPortIsSet {
				t.Fatalf("kubelet port %d, want set=%v", port, tc.wantPortIsSet)
			}
			if ip := n.Status.Addresses[0]; ip.Type != corev1.NodeInternalIP || ip.Address != "192.0.2.9" {
				t.Fatalf("InternalIP %v", n.Status.Addresses)
			}
		})
	}
}
