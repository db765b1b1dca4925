package cloudhub

import (
	"testing"

	"github.com/kedge-io/kedge/sdk/message"
)

// The resources are those KubeEdge v1.23.1's edgecore and cloudcore used in the recorded device flow
// (devicecontroller/testdata/kubeedge-v1.23.1-device-flow.json).
func TestKubeEdgeDevicetwinPathsAreRenamedForDevicecontrollerAndOthersLeftAlone(t *testing.T) {
	for _, tc := range []struct {
		resource, group string
		want, wantGroup string
		renamed         bool
	}{
		{"membership/detail", "resource", "default/membership_detail/n1", "twin", true},
		{"device/ke-pair/thermometer-1/twin/edge_updated", "resource", "ke-pair/twin_edge_updated/thermometer-1", "twin", true},
		{"device/ke-pair/thermometer-1/state/update", "resource", "ke-pair/state_update/thermometer-1", "twin", true},
		{"device/ke-pair/thermometer-1/twin/cloud_updated", "resource", "device/ke-pair/thermometer-1/twin/cloud_updated", "resource", false},
		{"device//x/twin/edge_updated", "resource", "device//x/twin/edge_updated", "resource", false},
		{"ke-pair/device/thermometer-1", "resource", "ke-pair/device/thermometer-1", "resource", false},
		{"null/node/n1", "meta", "null/node/n1", "meta", false},
	} {
		msg := message.New("twin", tc.group, message.OpUpdate, tc.resource)
		if got := kubeEdgeDeviceUp(&msg, "n1"); got != tc.renamed || msg.Route.Resource != tc.want || msg.Route.Group != tc.wantGroup {
			t.Errorf("%s: renamed %v to %s (group %s), want %v %s (%s)", tc.resource, got, msg.Route.Resource, msg.Route.Group, tc.renamed, tc.want, tc.wantGroup)
		}
	}
}

func TestKubeEdgeMembershipGoesDownAsMembershipAndNothingElseIsLetThrough(t *testing.T) {
	for _, tc := range []struct {
		resource, node, edge string
		ok                   bool
	}{
		{"node/n1/membership", "n1", "membership", true},
		{"node/n1/other", "", "", false},
		{"node//membership", "", "", false},
		{"nodes/n1/membership", "", "", false},
	} {
		node, edge, ok := kubeEdgeDeviceDown(tc.resource)
		if node != tc.node || edge != tc.edge || ok != tc.ok {
			t.Errorf("%s: %q %q %v, want %q %q %v", tc.resource, node, edge, ok, tc.node, tc.edge, tc.ok)
		}
	}
}
