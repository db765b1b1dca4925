package eventbus

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/kedge-io/kedge/sdk"
)

// BrokerSecurity configures who may connect to the embedded broker. The zero value is the old
// behaviour: every client is accepted (keep internalAddress on loopback then).
type BrokerSecurity struct {
	PasswordFile string `yaml:"passwordFile" doc:"File of user:bcrypt-hash lines (htpasswd -B format; # comments and blank lines ignored). Set: every client must connect with a listed username and its password. Empty: no password check."`
	CertFile     string `yaml:"certFile" doc:"PEM certificate the broker serves TLS with (with keyFile); set, the listener speaks MQTT over TLS only."`
	KeyFile      string `yaml:"keyFile" doc:"PEM private key of certFile."`
	ClientCAFile string `yaml:"clientCAFile" doc:"PEM CA bundle; set (with certFile), every client must present a certificate signed by it."`
}

// check records what does not go together in the broker's settings (keys under "broker.").
func (s BrokerSecurity) check(c *sdk.SettingChecks) {
	c.Check((s.CertFile == "") == (s.KeyFile == ""), "broker.keyFile",
		"%q with broker.certFile %q: set both for TLS, or neither", s.KeyFile, s.CertFile)
	c.Check(s.ClientCAFile == "" || s.CertFile != "", "broker.clientCAFile",
		"%q needs broker.certFile and broker.keyFile: client certificates are checked in a TLS handshake", s.ClientCAFile)
}

func (s BrokerSecurity) validate() error {
	var c sdk.SettingChecks
	s.check(&c)
	return c.Err()
}

// selfListener is the plain loopback listener only eventbus's own client uses while the public
// listener speaks TLS; it accepts only the per-process credential.
const selfListener = "kedge-self"

// brokerAuth is the broker's authentication hook.
type brokerAuth struct {
	mochi.HookBase
	users    map[string][]byte // user -> bcrypt hash; nil: no password check
	selfUser string
	selfPass []byte // random per process: eventbus's own client, never written anywhere
	tls      *tls.Config
	log      *slog.Logger
	refused  *prometheus.CounterVec
}

// dummyHash is compared against for an unknown user, so its refusal takes as long as a wrong password:
// the bcrypt hash (bcrypt.DefaultCost) of "kedge-no-such-user", written out because computing it at
// package init cost every start of every class with eventbus ~70 ms of CPU (170 ms on a busy
// machine), `edgecore version` included.
var dummyHash = []byte("$2a$10$.9llFow9GaC3jAlhxdNimeI5tHkpmsmOGnuPhfcM1D7POzTivdiPy")

// newBrokerAuth loads the password file and the TLS material.
func newBrokerAuth(s BrokerSecurity, reg prometheus.Registerer, log *slog.Logger) (*brokerAuth, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	pass := make([]byte, 32)
	if _, err := rand.Read(pass); err != nil {
		return nil, err
	}
	a := &brokerAuth{selfUser: "kedge-eventbus-self", selfPass: []byte(base64.RawURLEncoding.EncodeToString(pass)), log: log}
	a.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_broker_refused_total",
		Help: "Connections the embedded broker refused, by reason (bad_credentials)."}, []string{"reason"})
	if reg != nil {
		if err := reg.Register(a.refused); err != nil {
			return nil, err
		}
	}
	if s.PasswordFile != "" {
		users, err := readPasswordFile(s.PasswordFile)
		if err != nil {
			return nil, err
		}
		a.users = users
	}
	if s.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker.certFile %s / broker.keyFile %s: %w", s.CertFile, s.KeyFile, err)
		}
		a.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if s.ClientCAFile != "" {
			pem, err := os.ReadFile(s.ClientCAFile)
			if err != nil {
				return nil, fmt.Errorf("broker.clientCAFile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("broker.clientCAFile %s: no PEM certificate in it", s.ClientCAFile)
			}
			a.tls.ClientCAs, a.tls.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
	}
	return a, nil
}

// readPasswordFile reads user:bcrypt-hash lines.
func readPasswordFile(path string) (map[string][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("broker.passwordFile: %w", err)
	}
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("broker.passwordFile %s line %d: want user:bcrypt-hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("broker.passwordFile %s line %d (user %q): not a bcrypt hash ($2a$/$2b$/$2y$, e.g. from htpasswd -nB): %v", path, n, user, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("broker.passwordFile %s line %d: user %q is listed twice", path, n, user)
		}
		users[user] = []byte(hash)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("broker.passwordFile %s lists no user: nobody could connect (leave passwordFile empty to turn the password check off)", path)
	}
	return users, nil
}

// open says whether anyone may connect without a credential.
func (a *brokerAuth) open() bool { return a.users == nil && (a.tls == nil || a.tls.ClientCAs == nil) }

func (a *brokerAuth) ID() string { return "kedge-broker-auth" }

func (a *brokerAuth) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

// OnConnectAuthenticate: the self listener takes only eventbus's own credential; elsewhere that
// credential, or a listed user with its password (when a password file is set), or anyone (when not —
// a client certificate, if required, was checked in the TLS handshake already).
func (a *brokerAuth) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user, pass := string(pk.Connect.Username), pk.Connect.Password
	self := user == a.selfUser && subtle.ConstantTimeCompare(pass, a.selfPass) == 1
	if cl.Net.Listener == selfListener || self || a.users == nil {
		if cl.Net.Listener == selfListener && !self {
			a.refuse(cl, user)
			return false
		}
		return true
	}
	hash, ok := a.users[user]
	if !ok {
		hash = dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, pass) != nil || !ok {
		a.refuse(cl, user)
		return false
	}
	return true
}

func (a *brokerAuth) refuse(cl *mochi.Client, user string) {
	a.refused.WithLabelValues("bad_credentials").Inc()
	a.log.Warn("embedded MQTT broker refused a client: unknown user or wrong password", "user", user, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
}

// OnACLCheck: an authenticated client may publish and subscribe anywhere.
func (a *brokerAuth) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// clientOptions gives eventbus's own client to the embedded broker its credential.
func (a *brokerAuth) clientOptions(o *mqtt.ClientOptions) {
	o.SetUsername(a.selfUser).SetPassword(string(a.selfPass))
}
