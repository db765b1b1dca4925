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
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/pki/kubestore"
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
	PageSize         int           `yaml:"pageSize" doc:"Rows per page of the fleet and devices views (counts are over every row)."`
	LoginRate        float64       `yaml:"loginRate" doc:"Login attempts a minute allowed per client address, after loginBurst at once; more get 429 with Retry-After."`
	LoginBurst       int           `yaml:"loginBurst" doc:"Login attempts a client address may make at once."`
	OwnershipNS      string        `yaml:"ownershipNamespace" doc:"Namespace of cloudhub's ownership Leases (which replica holds a node); empty: $POD_NAMESPACE, else default."`
	CASecret         CASecret      `yaml:"caSecret" doc:"Load the cluster CA from this Kubernetes Secret (as cloudhub's caSecret) instead of pkiDir; the serving certificate stays in pkiDir/console."`

	limiter *loginLimiter
	renders renders
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

// CASecret names the Secret holding the cluster CA (ca.crt, ca.key), as cloudhub's caSecret does.
type CASecret struct {
	Enable     bool   `yaml:"enable" doc:"Read the CA from the Secret below (set it as cloudhub's caSecret)."`
	Kubeconfig string `yaml:"kubeconfig" doc:"Path of the kubeconfig for the API server; empty: the console's kubeconfig."`
	Namespace  string `yaml:"namespace" doc:"Namespace of the Secret."`
	Name       string `yaml:"name" doc:"Name of the Secret."`
}

// New returns the console with its defaults.
func New() *Module {
	return &Module{
		Address:       "0.0.0.0:10008",
		PKIDir:        "/var/lib/kedge/pki",
		SessionMaxAge: 8 * time.Hour,
		AuthCacheTTL:  30 * time.Second,
		PushInterval:  250 * time.Millisecond,
		PageSize:      100,
		LoginRate:     10,
		LoginBurst:    5,
		CASecret:      CASecret{Namespace: kubestore.DefaultCASecretNamespace, Name: kubestore.DefaultCASecretName},
	}
}

// SetClients sets the API clients before Start (tests and embedders that already have them).
func SetClients(m *Module, c kubernetes.Interface, d dynamic.Interface) { m.client, m.dyn = c, d }

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	if m.OwnershipNS == "" {
		if m.OwnershipNS = os.Getenv("POD_NAMESPACE"); m.OwnershipNS == "" {
			m.OwnershipNS = "default"
		}
	}
	m.limiter = newLoginLimiter(m.LoginRate, m.LoginBurst)
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
	m.auth = newAuthenticator(m.client, m.AuthCacheTTL, m.OwnershipNS)
	caStore, err := m.caStorage()
	if err != nil {
		return err
	}
	ca, err := pki.LoadCA(ctx, caStore) // cloudhub's; never a second one
	if err != nil {
		return fmt.Errorf("cluster CA from %v: %w", caStore, err)
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
	m.fleet = newFleet(m.client, m.dyn, h.Logger(), m.PushInterval, m.OwnershipNS, m.PageSize)
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

// caStorage is where the cluster CA is: caSecret's Secret when enabled, else pkiDir.
func (m *Module) caStorage() (pki.Storage, error) {
	if !m.CASecret.Enable {
		return pki.FileStorage{Dir: m.PKIDir}, nil
	}
	client := m.client
	if m.CASecret.Kubeconfig != "" {
		cfg, err := kube.RestConfig(m.CASecret.Kubeconfig, "modules.console.caSecret.kubeconfig")
		if err != nil {
			return nil, err
		}
		if client, err = kubernetes.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("modules.console.caSecret: %w", err)
		}
	}
	return kubestore.SecretStorage{Secrets: client.CoreV1().Secrets(m.CASecret.Namespace), Namespace: m.CASecret.Namespace, Name: m.CASecret.Name}, nil
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
