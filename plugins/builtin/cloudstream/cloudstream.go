// Package cloudstream serves, for edge nodes, the kubelet API the kube-apiserver calls for
// `kubectl logs` and `kubectl exec`, and carries each session to the pod's node over the stream
// tunnel that node's edgestream keeps open (see package wire for the protocol).
package cloudstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/kube"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; edgecontroller asks it for the stream endpoint.
const Name = "cloudstream"

// EndpointResource is the resource of the query edgecontroller sends to learn where the API server
// reaches the stream server.
const EndpointResource = "streamendpoint"

// Endpoint answers that query. An empty Address means: do not touch the nodes' addresses.
type Endpoint struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
}

func init() {
	sdk.Register(sdk.Info{
		Name:    Name,
		Group:   "stream",
		Doc:     "kubectl logs and exec for edge pods: the kubelet API for the kube-apiserver, each session carried over the edge's stream tunnel.",
		Enabled: false, // needs a kube-apiserver and an advertised address
		New:     func() sdk.Module { return New() },
	})
}

// Module is cloudstream; its exported fields are its settings.
type Module struct {
	StreamAddress                string             `yaml:"streamAddress" doc:"Listen address of the kubelet API the kube-apiserver calls for edge nodes (https, port 10003; only clients with a certificate of clientCAFile)." cfg:"min"`
	TunnelAddress                string             `yaml:"tunnelAddress" doc:"Listen address of the stream tunnel edge nodes dial (wss, mTLS with their node certificate, port 10004)." cfg:"min"`
	AdvertiseAddress             string             `yaml:"advertiseAddress" doc:"IP or DNS name at which the kube-apiserver reaches streamAddress; edgecontroller writes it as each edge node's Hostname address. Empty: node addresses are left alone and streams do not reach edge nodes." cfg:"min"`
	AdvertisePort                int32              `yaml:"advertisePort" doc:"Port written as each edge node's kubelet endpoint; 0: the port of streamAddress."`
	PKIDir                       string             `yaml:"pkiDir" doc:"cloudhub's pkiDir: the cluster CA is loaded from it; the stream serving certificate is kept in its stream/ subfolder."`
	Kubeconfig                   string             `yaml:"kubeconfig" doc:"Path of the kubeconfig for the API server (pod lookups); empty: $KUBECONFIG, else in-cluster."`
	ClientCAFile                 string             `yaml:"clientCAFile" doc:"CA of the kube-apiserver's kubelet client certificate (--kubelet-client-certificate; kubeadm: /etc/kubernetes/pki/ca.crt). Required: a client without a certificate it issued is refused in the TLS handshake. Empty is a start error unless insecureAllowUnauthenticated is on." cfg:"min"`
	ClientAllowedNames           []string           `yaml:"clientAllowedNames" doc:"Common names accepted from clientCAFile (kubeadm: kube-apiserver-kubelet-client); others get 403. Set it when that CA also signs other clients (kubeadm's cluster CA signs every kubelet's client certificate). Empty: any certificate of clientCAFile."`
	InsecureAllowUnauthenticated bool               `yaml:"insecureAllowUnauthenticated" doc:"DEVELOPMENT ONLY: without clientCAFile, serve logs, exec, attach and port-forward of every edge pod to anyone who reaches streamAddress. Logged at ERROR on start and shown by kedge_cloudstream_insecure_unauthenticated 1. Ignored when clientCAFile is set."`
	SessionTimeout               time.Duration      `yaml:"sessionTimeout" doc:"How long a request waits for the edge to open its session connection."`
	Heartbeat                    time.Duration      `yaml:"heartbeat" doc:"Ping period on the control tunnel; a tunnel silent for two periods is closed."`
	CASecret                     CASecret           `yaml:"caSecret" doc:"Load the cluster CA from this Kubernetes Secret (as cloudhub's caSecret) instead of pkiDir; the serving certificates stay in pkiDir."`
	MetricsAPI                   MetricsAPISettings `yaml:"metricsAPI" doc:"metrics.k8s.io/v1beta1 (kubectl top) for edge nodes, served as an aggregated API and filled over the stream tunnels."`
	// Forward lets any replica answer for any node (forward.go).
	Forward ForwardSettings `yaml:"forward" doc:"Several cloudcore replicas: a request for a node whose stream tunnel another replica holds is forwarded there (one hop, mTLS with the cluster CA)."`

	host    sdk.Host
	client  kubernetes.Interface
	metrics *metrics
	life    context.Context
	servers []*http.Server
	wg      sync.WaitGroup
	port    int32 // bound port of streamAddress
	mapi    *metricsAPI
	fwd     *forwarder // nil unless forward is enabled

	mu      sync.Mutex
	tunnels map[string]*tunnel    // node -> its control tunnel
	pending map[string]*pending   // session id -> waiting request
	active  map[net.Conn]struct{} // session connections in use, closed on Stop
}

var _ sdk.Module = (*Module)(nil)

// CASecret names the Secret cloudhub keeps the CA in (cloudhub's caSecret); read with kubeconfig's identity.
type CASecret struct {
	Enable    bool   `yaml:"enable" doc:"Read the CA from the Secret below (set it when cloudhub's caSecret is enabled)."`
	Namespace string `yaml:"namespace" doc:"Namespace of the Secret."`
	Name      string `yaml:"name" doc:"Name of the Secret."`
}

// New returns cloudstream with its defaults.
func New() *Module {
	return &Module{
		StreamAddress:  "0.0.0.0:10003",
		TunnelAddress:  "0.0.0.0:10004",
		PKIDir:         "/var/lib/kedge/pki",
		SessionTimeout: 10 * time.Second,
		Heartbeat:      15 * time.Second,
		CASecret:       CASecret{Namespace: kubestore.DefaultCASecretNamespace, Name: kubestore.DefaultCASecretName},
		MetricsAPI:     defaultMetricsAPI(),
		Forward:        defaultForward(),
	}
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	clientCAs, err := m.clientAuth() // before anything else: no stream server without client authentication
	if err != nil {
		return err
	}
	m.host, m.life = h, ctx
	m.tunnels, m.pending, m.active = map[string]*tunnel{}, map[string]*pending{}, map[net.Conn]struct{}{}
	if m.metrics, err = newMetrics(h.Metrics(), m); err != nil {
		return err
	}
	if clientCAs == nil {
		m.metrics.insecure.Set(1)
		h.Logger().Error("INSECURE: insecureAllowUnauthenticated is on and clientCAFile is empty: anyone who reaches "+
			"streamAddress can read logs of, exec into, attach to and port-forward to every edge pod. Development only: "+
			"set modules.cloudstream.clientCAFile to the CA of the kube-apiserver's kubelet client certificate.",
			"streamAddress", m.StreamAddress)
	} else if m.InsecureAllowUnauthenticated {
		h.Logger().Warn("insecureAllowUnauthenticated is ignored: clientCAFile is set, client certificates are required")
	}
	if m.client == nil {
		cfg, err := kube.RestConfig(m.Kubeconfig, "modules.cloudstream.kubeconfig")
		if err != nil {
			return err
		}
		cfg.UserAgent = "kedge-cloudstream"
		if m.client, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("API client: %w", err)
		}
	}
	var caSt pki.Storage = pki.FileStorage{Dir: m.PKIDir}
	if m.CASecret.Enable {
		caSt = kubestore.SecretStorage{Secrets: m.client.CoreV1().Secrets(m.CASecret.Namespace), Namespace: m.CASecret.Namespace, Name: m.CASecret.Name}
	}
	ca, err := pki.LoadCA(ctx, caSt) // cloudhub's; never a second one
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
	serving, err := pki.NewServerCert(ctx, ca, pki.FileStorage{Dir: filepath.Join(m.PKIDir, "stream")},
		pki.ServerCertOptions{IPs: ips, DNSNames: names, Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("stream serving certificate: %w", err)
	}
	streamTLS := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serving.GetCertificate, NextProtos: []string{"http/1.1"}}
	if clientCAs != nil {
		streamTLS.ClientAuth, streamTLS.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	tunnelTLS := pki.ServerTLSConfig(ca, serving)
	tunnelTLS.NextProtos = []string{"http/1.1"}
	streamLog := pki.HandshakeErrorLog(h.Logger(), "stream", func(reason string) { m.metrics.streamRefused.WithLabelValues(reason).Inc() })
	if err := m.listen(&m.StreamAddress, streamTLS, http.HandlerFunc(m.serveKubelet), streamLog); err != nil {
		return err
	}
	_, p, _ := net.SplitHostPort(m.StreamAddress)
	port, _ := strconv.Atoi(p)
	m.port = int32(port)
	tunnelLog := pki.HandshakeErrorLog(h.Logger(), "tunnel", func(reason string) { m.metrics.refused.WithLabelValues(reason).Inc() })
	if err := m.listen(&m.TunnelAddress, tunnelTLS, http.HandlerFunc(m.serveTunnel), tunnelLog); err != nil {
		m.closeServers(ctx)
		return err
	}
	if err := m.startForward(ca); err != nil {
		m.closeServers(ctx)
		return err
	}
	if m.MetricsAPI.Enable {
		if err := m.startMetricsAPI(ctx, ca, ips, names); err != nil {
			m.closeServers(ctx)
			return err
		}
	}
	h.Logger().Info("serving edge streams", "stream", m.StreamAddress, "tunnel", m.TunnelAddress, "advertise", m.endpoint())
	return nil
}

// listen binds addr before returning (a taken port fails Start) and serves TLS on it; HTTP/2 is off
// because sessions are hijacked HTTP/1.1 connections.
func (m *Module) listen(addr *string, cfg *tls.Config, h http.Handler, errLog *log.Logger) error {
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *addr, err)
	}
	*addr = ln.Addr().String()
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	m.servers = append(m.servers, srv)
	m.wg.Go(func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.host.Logger().Error("server stopped", "address", *addr, "err", err)
		}
	})
	return nil
}

func (m *Module) closeServers(ctx context.Context) {
	for _, s := range m.servers {
		_ = s.Shutdown(ctx)
	}
}

// endpoint is what edgecontroller writes into edge nodes' status.
func (m *Module) endpoint() Endpoint {
	if m.AdvertiseAddress == "" {
		return Endpoint{}
	}
	port := m.AdvertisePort
	if port == 0 {
		port = m.port
	}
	return Endpoint{Address: m.AdvertiseAddress, Port: port}
}

// Endpoint is the address and port the kube-apiserver reaches the stream server at (after Start).
func (m *Module) Endpoint() Endpoint { return m.endpoint() }

// Handle answers edgecontroller's query for the stream endpoint.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if msg.IsReply() {
		// An edge's answer to a hub message another replica forwarded here (forward_hub.go) that came
		// after the wait for it ended: that replica already answered its caller.
		m.host.Logger().Debug("late answer to a forwarded hub message dropped", "parent", msg.Header.ParentID)
		return nil
	}
	if msg.Route.Operation != message.OpQuery || msg.Route.Resource != EndpointResource {
		return fmt.Errorf("cloudstream answers only %s of %s, not %s of %q", message.OpQuery, EndpointResource, msg.Route.Operation, msg.Route.Resource)
	}
	reply, err := msg.Reply(Name, m.endpoint())
	if err != nil {
		return err
	}
	return m.host.Reply(ctx, reply)
}

func (m *Module) Stop(ctx context.Context) error {
	if m.mapi != nil {
		m.mapi.cancel() // the scrape loop and its scrapes
	}
	m.closeServers(ctx)
	if m.fwd != nil {
		m.fwd.stopLeases()
	}
	m.mu.Lock()
	for _, t := range m.tunnels {
		_ = t.ws.Close()
	}
	for c := range m.active {
		_ = c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}
