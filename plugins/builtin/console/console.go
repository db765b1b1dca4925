// Package console is the fleet console: a read-only web view of every edge node (link state, last
// heartbeat, edgecore version, pods, devices), served by cloudcore on its own HTTPS port with a
// serving certificate of the cluster CA, authenticated and authorized by the Kubernetes API
// (TokenReview, SubjectAccessReview) and kept live with Server-Sent Events.
package console

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/kube"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address.
const Name = "console"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "hubevents",          // cloudhub tells this group when a node connects or disconnects
		Requires: []string{"cloudhub"}, // its CA and its link events
		Doc:      "The fleet console: every edge node with its link state, heartbeat, version, pods and devices, live in the browser (HTTPS, Kubernetes tokens and RBAC).",
		Enabled:  false, // opt-in: needs a kube-apiserver
		New:      func() sdk.Module { return New() },
	})
}

// Module is the console; its exported fields are its settings.
type Module struct {
	Address          string        `yaml:"address" doc:"Listen address of the console (https)." cfg:"min"`
	AdvertiseAddress string        `yaml:"advertiseAddress" doc:"IP or DNS name operators open the console at; added to its serving certificate (127.0.0.1 and localhost always are)."`
	PKIDir           string        `yaml:"pkiDir" doc:"cloudhub's pkiDir: the cluster CA is loaded from it; the console's serving certificate is kept in its console/ subfolder."`
	Kubeconfig       string        `yaml:"kubeconfig" doc:"Path of the kubeconfig for the API server (watching nodes, pods and devices; TokenReview and SubjectAccessReview); empty: $KUBECONFIG, else in-cluster."`
	SessionMaxAge    time.Duration `yaml:"sessionMaxAge" doc:"Lifetime of the session cookie that holds the pasted token; the token is checked again with TokenReview at least every authCacheTTL."`
	AuthCacheTTL     time.Duration `yaml:"authCacheTTL" doc:"How long a TokenReview and SubjectAccessReview answer is reused for the same token."`
	PushInterval     time.Duration `yaml:"pushInterval" doc:"Changes are coalesced and pushed to open pages at most this often."`

	host    sdk.Host
	client  kubernetes.Interface
	dyn     dynamic.Interface
	life    context.Context
	srv     *http.Server
	wg      sync.WaitGroup
	auth    *authenticator
	fleet   *fleet
	metrics *metrics
	csrfKey []byte
}

var _ sdk.Module = (*Module)(nil)

// New returns the console with its defaults.
func New() *Module {
	return &Module{
		Address:       "0.0.0.0:10008",
		PKIDir:        "/var/lib/kedge/pki",
		SessionMaxAge: 8 * time.Hour,
		AuthCacheTTL:  30 * time.Second,
		PushInterval:  250 * time.Millisecond,
	}
}

// SetClients sets the API clients before Start (tests and embedders that already have them).
func SetClients(m *Module, c kubernetes.Interface, d dynamic.Interface) { m.client, m.dyn = c, d }

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if m.SessionMaxAge <= 0 || m.AuthCacheTTL <= 0 || m.PushInterval <= 0 {
		return errors.New("modules.console: sessionMaxAge, authCacheTTL and pushInterval must be positive")
	}
	m.host, m.life = h, ctx
	if m.client == nil {
		cfg, err := kube.RestConfig(m.Kubeconfig, "modules.console.kubeconfig")
		if err != nil {
			return err
		}
		cfg.UserAgent = "kedge-console"
		if m.client, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("API client: %w", err)
		}
		if m.dyn, err = dynamic.NewForConfig(cfg); err != nil {
			return fmt.Errorf("API client: %w", err)
		}
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	m.csrfKey = make([]byte, 32)
	if _, err := rand.Read(m.csrfKey); err != nil {
		return err
	}
	m.auth = newAuthenticator(m.client, m.AuthCacheTTL)
	ca, err := pki.LoadCA(ctx, pki.FileStorage{Dir: m.PKIDir}) // cloudhub's; never a second one
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	var ips []net.IP
	var names []string
	if m.AdvertiseAddress != "" {
		if ip := net.ParseIP(m.AdvertiseAddress); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, m.AdvertiseAddress)
		}
	}
	serving, err := pki.NewServerCert(ctx, ca, pki.FileStorage{Dir: filepath.Join(m.PKIDir, "console")},
		pki.ServerCertOptions{IPs: ips, DNSNames: names, Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("console serving certificate: %w", err)
	}
	m.fleet = newFleet(m.client, m.dyn, h.Logger(), m.PushInterval)
	if err := m.fleet.start(ctx, &m.wg); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", m.Address)
	if err != nil {
		return fmt.Errorf("listen %s: %w", m.Address, err)
	}
	m.Address = ln.Addr().String()
	m.srv = &http.Server{Handler: m.routes(), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:   &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serving.GetCertificate},
		ErrorLog:    pki.HandshakeErrorLog(h.Logger(), "console", func(string) {}),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	m.wg.Go(func() {
		if err := m.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.Logger().Error("console server stopped", "address", m.Address, "err", err)
		}
	})
	h.Logger().Info("serving the console", "url", "https://"+m.Address+"/")
	return nil
}

// Handle takes cloudhub's link events (connected, disconnected) and ignores the rest of the group's
// traffic (inventories are edgecontroller's).
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	switch msg.Route.Operation {
	case message.OpConnected, message.OpDisconnected:
	default:
		return nil
	}
	res, err := message.ParseCloud(msg.Route.Resource)
	if err != nil || res.Node == "" {
		return fmt.Errorf("link event with resource %q names no node", msg.Route.Resource)
	}
	m.fleet.setLink(res.Node, msg.Route.Operation == message.OpConnected, time.Now())
	return nil
}

func (m *Module) Stop(ctx context.Context) error {
	if m.srv != nil {
		_ = m.srv.Shutdown(ctx) // open event streams end with the module's context
	}
	m.wg.Wait()
	return nil
}

// URL is where the console serves (after Start).
func (m *Module) URL() string { return "https://" + m.Address + "/" }
