package eventbus

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBrokerSecuritySettingsAreRefusedWithTheFileAndFieldNamed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain.passwd", "sensor:plaintext-password\n")
	empty := write("empty.passwd", "# nobody\n\n")
	twice := write("twice.passwd", "a:$2a$04$0Gz2cE6SGT2C1tq7Xq1jE.y7.7Jx9c0nRkzvJ1pGmJc1lQnX0yT2u\na:$2a$04$0Gz2cE6SGT2C1tq7Xq1jE.y7.7Jx9c0nRkzvJ1pGmJc1lQnX0yT2u\n")
	noColon := write("nocolon.passwd", "justaname\n")
	notPEM := write("cert.pem", "not a certificate")
	for _, tc := range []struct {
		name string
		s    BrokerSecurity
		want []string
	}{
		{"a plaintext password", BrokerSecurity{PasswordFile: plain}, []string{plain, "line 1", `"sensor"`, "bcrypt"}},
		{"no user", BrokerSecurity{PasswordFile: empty}, []string{empty, "no user"}},
		{"a user listed twice", BrokerSecurity{PasswordFile: twice}, []string{twice, "line 2", `"a"`, "twice"}},
		{"a line without a colon", BrokerSecurity{PasswordFile: noColon}, []string{noColon, "line 1", "user:bcrypt-hash"}},
		{"a missing password file", BrokerSecurity{PasswordFile: "/nonexistent/mqtt.passwd"}, []string{"broker.passwordFile", "/nonexistent/mqtt.passwd"}},
		{"a certificate without its key", BrokerSecurity{CertFile: notPEM}, []string{"broker.certFile", "broker.keyFile"}},
		{"a client CA without TLS", BrokerSecurity{ClientCAFile: notPEM}, []string{"broker.clientCAFile", "needs broker.certFile"}},
		{"a certificate that is not PEM", BrokerSecurity{CertFile: notPEM, KeyFile: notPEM}, []string{"broker.certFile " + notPEM}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newBrokerAuth(tc.s, nil, slog.Default())
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
