package cloudhub

import (
	"strings"

	"github.com/kedge-io/kedge/sdk/message"
)

// KubeEdge's devicetwin (v1.23) names its messages to the cloud outside the <namespace>/<type>/<name>
// scheme, in group resource (observed between upstream cloudcore and edgecore, see
// plugins/builtin/devicecontroller/testdata):
//
//	membership/detail                          get     its device list, at start
//	device/<namespace>/<name>/twin/edge_updated update  reported twin values
//	device/<namespace>/<name>/state/update      update  device state
//
// On a KubeEdge session cloudhub renames them into Kedge resources in group twin, so they reach
// devicecontroller (the "twin" dispatch) instead of edgecontroller, which would refuse them. The
// types below are devicecontroller's names for them.
const (
	kubeEdgeMembershipDetail = "membership_detail" // default/membership_detail/<node>
	kubeEdgeTwinEdgeUpdated  = "twin_edge_updated" // <ns>/twin_edge_updated/<name>
	kubeEdgeStateUpdate      = "state_update"      // <ns>/state_update/<name>

	// kubeEdgeMembership is the edge resource of KubeEdge's membership update (added_devices,
	// removed_devices) to an edge: "membership", outside the scheme too; devicecontroller addresses
	// it as node/<node>/membership.
	kubeEdgeMembership = "membership"
)

// kubeEdgeDeviceUp renames a KubeEdge devicetwin message from node into Kedge's resource form; it
// reports whether msg was one.
func kubeEdgeDeviceUp(msg *message.Message, node string) bool {
	res := msg.Route.Resource
	if res == "membership/detail" {
		msg.Route.Resource = message.Resource{Namespace: "default", Type: kubeEdgeMembershipDetail, Name: node}.Edge()
		msg.Route.Group = "twin"
		return true
	}
	segs := strings.Split(res, "/")
	if len(segs) != 5 || segs[0] != "device" || segs[1] == "" || segs[2] == "" {
		return false
	}
	var typ string
	switch segs[3] + "/" + segs[4] {
	case "twin/edge_updated":
		typ = kubeEdgeTwinEdgeUpdated
	case "state/update":
		typ = kubeEdgeStateUpdate
	default:
		return false
	}
	msg.Route.Resource = message.Resource{Namespace: segs[1], Type: typ, Name: segs[2]}.Edge()
	msg.Route.Group = "twin"
	return true
}

// kubeEdgeDeviceDown returns the node and edge resource of node/<node>/membership, KubeEdge's
// membership update, which is not in the <namespace>/<type> scheme.
func kubeEdgeDeviceDown(resource string) (node, edge string, ok bool) {
	rest, found := strings.CutPrefix(resource, "node/")
	if !found {
		return "", "", false
	}
	node, edge, found = strings.Cut(rest, "/")
	if !found || node == "" || edge != kubeEdgeMembership {
		return "", "", false
	}
	return node, edge, true
}
