package eventbus_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk/message"
)

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a client certificate, as files.
type pki struct {
	dir                                              string
	ca, serverCert, serverKey, clientCert, clientKey string
	otherCA                                          string // a CA that signed nothing here
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	p := pki{dir: dir}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key, der
	}
	ca, caKey, caDER := newCA("test broker CA")
	p.ca = write("ca.crt", "CERTIFICATE", caDER)
	_, _, otherDER := newCA("another CA")
	p.otherCA = write("other-ca.crt", "CERTIFICATE", otherDER)
	leaf := func(cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return der, kder
	}
	sder, skey := leaf("127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.serverCert, p.serverKey = write("server.crt", "CERTIFICATE", sder), write("server.key", "EC PRIVATE KEY", skey)
	cder, ckey := leaf("sensor-1", x509.ExtKeyUsageClientAuth, nil)
	p.clientCert, p.clientKey = write("client.crt", "CERTIFICATE", cder), write("client.key", "EC PRIVATE KEY", ckey)
	return p
}

func passwordFile(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# user:bcrypt\n\n")
	for u, pw := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	path := filepath.Join(t.TempDir(), "mqtt.passwd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mosq runs mosquitto_pub with args against the broker and returns its exit error and output.
func mosq(t *testing.T, addr string, args ...string) (error, string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mosquitto_pub", append([]string{"-h", host, "-p", port, "-q", "1", "-t", "kedge/test", "-m", "x"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return err, out.String()
}

func TestEmbeddedBrokerPasswordsAndTLSWithRealMosquittoClients(t *testing.T) {
	ensureMosquitto(t)
	p := newPKI(t)
	users := passwordFile(t, map[string]string{"sensor": "s3cret", "mapper": "other-pass"})
	cases := []struct {
		name   string
		broker map[string]any
		tries  []struct {
			what string
			args []string
			ok   bool
		}
	}{
		{"passwords", map[string]any{"passwordFile": users}, []struct {
			what string
			args []string
			ok   bool
		}{
			{"no credentials", nil, false},
			{"a wrong password", []string{"-u", "sensor", "-P", "wrong"}, false},
			{"another user's password", []string{"-u", "sensor", "-P", "other-pass"}, false},
			{"an unknown user", []string{"-u", "nobody", "-P", "s3cret"}, false},
			{"the right password", []string{"-u", "sensor", "-P", "s3cret"}, true},
			{"the second user", []string{"-u", "mapper", "-P", "other-pass"}, true},
		}},
		{"TLS", map[string]any{"certFile": p.serverCert, "keyFile": p.serverKey}, []struct {
			what string
			args []string
			ok   bool
		}{
			{"plain MQTT on the TLS port", nil, false},
			{"TLS trusting another CA", []string{"--cafile", p.otherCA}, false},
			{"TLS trusting the broker's CA", []string{"--cafile", p.ca}, true},
		}},
		{"TLS with client certificates and passwords", map[string]any{"certFile": p.serverCert, "keyFile": p.serverKey, "clientCAFile": p.ca, "passwordFile": users}, []struct {
			what string
			args []string
			ok   bool
		}{
			{"no client certificate", []string{"--cafile", p.ca, "-u", "sensor", "-P", "s3cret"}, false},
			{"a client certificate, a wrong password", []string{"--cafile", p.ca, "--cert", p.clientCert, "--key", p.clientKey, "-u", "sensor", "-P", "nope"}, false},
			{"a client certificate and the password", []string{"--cafile", p.ca, "--cert", p.clientCert, "--key", p.clientKey, "-u", "sensor", "-P", "s3cret"}, true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, eb := runEventbus(t, map[string]any{"internalAddress": "127.0.0.1:0", "broker": tc.broker}, sdktest.Capture("devicetwin"))
			for _, try := range tc.tries {
				err, out := mosq(t, eb.BrokerAddr(), try.args...)
				if (err == nil) != try.ok {
					t.Errorf("%s: mosquitto_pub err=%v, want ok=%v\n%s", try.what, err, try.ok, out)
				}
			}
			// The right client's publish reaches devicetwin. QoS 0: a QoS 1 twin update is acknowledged
			// only once devicetwin stores it (durable.go), and no devicetwin answers here.
			good := tc.tries[len(tc.tries)-1].args
			host, port, _ := net.SplitHostPort(eb.BrokerAddr())
			cmd := exec.Command("mosquitto_pub", append([]string{"-h", host, "-p", port, "-q", "0", "-t", "$hw/events/device/d1/twin/update", "-m", `{"event_id":"a1","twin":{}}`}, good...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("publish: %v %s", err, out)
			}
			m := h.Captured("devicetwin").Next(t, 15*time.Second)
			if m.Route.Resource != "$hw/events/device/d1/twin/update" {
				t.Fatalf("devicetwin got %s", m.Route.Resource)
			}
			// mosquitto_sub with the same credentials gets what eventbus publishes.
			topic := "$hw/events/device/d1/twin/update/delta"
			subArgs := append([]string{"-h", host, "-p", port, "-t", topic, "-C", "1", "-q", "1", "-W", "15"}, good...)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sub := exec.CommandContext(ctx, "mosquitto_sub", subArgs...)
			var out bytes.Buffer
			sub.Stdout, sub.Stderr = &out, &out
			if err := sub.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- sub.Wait() }()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for received := false; !received; {
				select {
				case err := <-done:
					if err != nil || strings.TrimSpace(out.String()) != `{"delta":{}}` {
						t.Fatalf("mosquitto_sub: %v %q", err, out.String())
					}
					received = true
				case <-tick.C:
					publishDelta(t, h, topic)
				}
			}
			if tc.broker["passwordFile"] != nil {
				if v := metricValue(t, h, "kedge_eventbus_broker_refused_total", "bad_credentials"); v == 0 {
					t.Error("kedge_eventbus_broker_refused_total{reason=bad_credentials} is 0")
				}
			}
		})
	}
}

// publishDelta asks eventbus to publish on topic, as devicetwin does.
func publishDelta(t *testing.T, h *sdktest.Harness, topic string) {
	t.Helper()
	m := message.New("devicetwin", "twin", message.OpPublish, topic)
	m.Content = json.RawMessage(`{"delta":{}}`)
	if err := h.Send(m); err != nil {
		t.Error(err)
	}
}
