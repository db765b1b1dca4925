package cloudhub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/hub/quichub"
)

// QUIC configures the hub's QUIC lane (host/hub: viaduct's stream layout over IETF QUIC).
type QUIC struct {
	Enable  bool   `yaml:"enable" doc:"Serve the hub on QUIC too (KubeEdge's cloudHub.quic.enable; off by default, as there). Edge nodes choose it with edgehub's transport: quic. KubeEdge v1.23.1's own edgecore speaks Google QUIC and cannot use it (it is recognised and told so in the log); keep those on the websocket hub."`
	Address string `yaml:"address" doc:"UDP listen address of the QUIC lane (edge nodes dial <host>:10001)."`
}

// listenQUIC binds the QUIC lane when it is enabled, with a TLS config made as the websocket hub's
// (the same CA, serving certificate and client-certificate rule) and the same identity rules; a
// certificate revoked by a --replace join is refused too.
func (m *Module) listenQUIC(cfg *tls.Config) error {
	if !m.QUIC.Enable {
		return nil
	}
	ln, err := quichub.Listen(m.QUIC.Address, cfg, hub.AcceptOptions{Options: hub.Options{Heartbeat: m.Heartbeat, Metrics: m.hubM, Logger: m.host.Logger()}})
	if err != nil {
		return fmt.Errorf("quic: %w", err)
	}
	m.quicLn = ln
	m.QUIC.Address = ln.Addr().String() // the bound address, when the config asked for port 0
	m.host.Logger().Info("serving edge nodes on QUIC", "address", m.QUIC.Address)
	m.wg.Go(func() {
		for {
			conn, err := ln.Accept(m.life)
			switch {
			case err == nil:
			case errors.Is(err, hub.ErrRejected):
				m.metrics.rejected.Inc()
				m.host.Logger().Warn("edge connection refused", "transport", "quic", "err", err)
				continue
			default:
				return // closed by Stop, or the module's life ended
			}
			if certs := conn.PeerCertificates(); len(certs) > 0 {
				if _, revoked := m.revoked(context.WithoutCancel(m.life), certs[0], conn.RemoteAddr().String()); revoked {
					_ = conn.Close()
					continue
				}
			}
			m.serveConn(conn)
		}
	})
	return nil
}

func (m *Module) stopQUIC() {
	if m.quicLn != nil {
		_ = m.quicLn.Close()
	}
}
