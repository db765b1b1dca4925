//go:build !kedge_nometaserver

package metamanager

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/kedge-io/kedge/plugins/builtin/metamanager/metaserver"
	"github.com/kedge-io/kedge/sdk"
)

// The MetaServer (package metaserver) links k8s.io/api and apimachinery; a build with the tag
// kedge_nometaserver (the minimal device class, see cmd/modules.yaml) leaves it and them out, and
// metaServer.enable then defaults to false.
func init() { startMetaServer = startServer }

// metaServer adapts *metaserver.Server to apiServer.
type metaServer struct{ *metaserver.Server }

func (s metaServer) record(obj sdk.Object, deleted bool) {
	s.Record(metaserver.Change{Key: obj.Key, RV: obj.ResourceVersion, Value: obj.Value, Deleted: deleted})
}

func startServer(ctx context.Context, m *Module) (apiServer, error) {
	log := m.host.Logger().With("part", "metaserver")
	admin, err := metaserver.AdminToken(m.MetaServer.AdminTokenFile, log)
	if err != nil {
		return nil, err
	}
	if admin == "" {
		log.Info("metaserver has no node-admin token (metaServer.adminTokenFile is empty): only pods' service-account tokens are accepted")
	}
	var tlsConf *tls.Config
	switch {
	case m.MetaServer.CertFile != "": // with keyFile (Validate)
		cert, err := metaserver.ServingCertificate(m.MetaServer.CertFile, m.MetaServer.KeyFile, log)
		if err != nil {
			return nil, err
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	default:
		log.Warn("metaserver serves plain HTTP (metaServer.certFile is empty): kubectl and kubeconfig-based clients will not send their tokens")
	}
	srv, err := metaserver.New(metaserver.Options{Address: m.MetaServer.Address, Store: m.host.Store(), Logger: log,
		Metrics: m.host.Metrics(), EventWindow: m.MetaServer.EventWindow, Auth: metaserver.NewAuthenticator(admin), TLS: tlsConf})
	if err != nil {
		return nil, err
	}
	if host, _, _ := net.SplitHostPort(m.MetaServer.Address); !isLoopback(host) && tlsConf == nil {
		m.host.Logger().Warn("metaserver listens beyond loopback over plain HTTP: bearer tokens cross the network in clear", "address", m.MetaServer.Address)
	}
	if err := srv.Load(ctx); err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		// The store matters more than the API: keep storing, and keep trying the address (an instance
		// being swapped out still holds it for a moment).
		m.host.Logger().Error("metaserver cannot listen yet; retrying in the background", "err", err)
	}
	m.wg.Go(func() { srv.Run(ctx) })
	return metaServer{srv}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
