package edgehub

import (
	"context"

	"github.com/kedge-io/kedge/host/hub"
)

// QUIC makes edgehub dial the cloud's QUIC lane instead of its websocket, as KubeEdge's edgecore.yaml
// does with edgeHub.quic.enable and edgeHub.quic.server.
type QUIC struct {
	Enable bool   `yaml:"enable" doc:"Dial cloudhub over QUIC (UDP) instead of the websocket. Kedge's cloudcore serves it with cloudhub.quic.enable. KubeEdge v1.23.1's cloudcore speaks Google QUIC, which no IETF QUIC client can use (it drops our packets; the dial times out saying what that likely means); keep the websocket for it."`
	Server string `yaml:"server" doc:"cloudhub's QUIC address, host:port (port 10001)."`
}

// dialQUIC connects to the cloud's QUIC lane with the node's certificate, offering the Kedge lane.
func (m *Module) dialQUIC(ctx context.Context) (*hub.Conn, error) {
	return hub.DialQUIC(ctx, hub.DialOptions{
		URL:       "quic://" + m.QUIC.Server,
		TLS:       m.tls,
		NodeID:    m.host.NodeName(),
		ProjectID: m.ProjectID,
		Options:   hub.Options{Heartbeat: m.Heartbeat, Logger: m.host.Logger()},
	})
}
