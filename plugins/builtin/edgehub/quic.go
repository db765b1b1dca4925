package edgehub

import (
	"context"
	"errors"

	"github.com/kedge-io/kedge/host/hub"
)

// QUIC makes edgehub dial the cloud's QUIC lane instead of its websocket, as KubeEdge's edgecore.yaml
// does with edgeHub.quic.enable and edgeHub.quic.server.
type QUIC struct {
	Enable bool   `yaml:"enable" doc:"Dial cloudhub over QUIC (UDP) instead of the websocket. Kedge's cloudcore serves it with cloudhub.quic.enable. KubeEdge v1.23.1's cloudcore speaks Google QUIC, which no IETF QUIC client can use (it drops our packets; the dial times out saying what that likely means); keep the websocket for it. Only in builds with the quic feature (the full class; not minimal or gateway)."`
	Server string `yaml:"server" doc:"cloudhub's QUIC address, host:port (port 10001)."`
}

// quicDial dials the QUIC lane (host/hub/quichub); nil when the build leaves QUIC out (the tag
// kedge_noquic, as the minimal and gateway classes have: see cmd/modules.yaml), so that quic-go is
// not linked. quic_lane.go sets it.
var quicDial func(ctx context.Context, o hub.DialOptions) (*hub.Conn, error)

// errNoQUIC is Start's error for quic.enable in a build without QUIC.
var errNoQUIC = errors.New("quic.enable is true, but this edgecore has no QUIC lane (built with the tag kedge_noquic, as the minimal and gateway classes are): set modules.edgehub.quic.enable=false to use the websocket, or use a build with the quic feature (the full class)")

// dialQUIC connects to the cloud's QUIC lane with the node's certificate, offering the Kedge lane.
func (m *Module) dialQUIC(ctx context.Context) (*hub.Conn, error) {
	if quicDial == nil {
		return nil, errNoQUIC
	}
	return quicDial(ctx, hub.DialOptions{
		URL:       "quic://" + m.QUIC.Server,
		TLS:       m.tls,
		NodeID:    m.host.NodeName(),
		ProjectID: m.ProjectID,
		Options:   hub.Options{Heartbeat: m.Heartbeat, Logger: m.host.Logger()},
	})
}
