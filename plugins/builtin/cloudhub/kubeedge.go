package cloudhub

import (
	"strings"

	"github.com/kedge-io/kedge/sdk/message"
)

// connectedContent is the content of a node's connected event: {"kubeedge": true} when the
// connection is KubeEdge's edgecore (it sends no inventory, and its edged asks for service-account
// tokens itself), else none.
func connectedContent(s *session) []byte {
	if s.kubeedge {
		return []byte(`{"kubeedge":true}`)
	}
	return nil
}

// kubeEdgeAck says whether a message to KubeEdge's edgecore waits for the edge's answer, as in
// upstream cloudhub's ACK mode (cloud/pkg/cloudhub/dispatcher, v1.23.1): an object the edge stores
// — group resource, with a resourceVersion, or a delete — which its metamanager answers with a
// response (parent_msg_id = the message's ID, content "OK") once stored. Everything else is sent
// once: what upstream sends in NO-ACK mode (sync requests, whose answer is routed back instead, and
// the resources its edge does not answer: podlist, membership, twin/cloud_updated,
// serviceaccounttoken, k8sca), messages without a resourceVersion (upstream drops those), and other
// groups than resource (devices' twin), whose answers from upstream's edge were not observed.
func kubeEdgeAck(msg message.Message) bool {
	if msg.Header.Sync || msg.Route.Group != "resource" || msg.Route.Operation == "response" {
		return false
	}
	if msg.Header.ResourceVersion == "" && msg.Route.Operation != message.OpDelete {
		return false
	}
	for _, s := range []string{"podlist", "membership", "twin/cloud_updated", "serviceaccounttoken", "k8sca"} {
		if strings.Contains(msg.Route.Resource, s) {
			return false
		}
	}
	return true
}
