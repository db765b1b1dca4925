package opcua_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/opcua"
	"github.com/kedge-io/kedge/plugins/mappers/opcua/uaserver"
	"github.com/kedge-io/kedge/sdk/mapper"
)

var dev = mapper.DeviceRef{Namespace: "default", Name: "boiler-1", Model: "boiler"}

func initDriver(t *testing.T, cfg string) mapper.Driver {
	t.Helper()
	d := opcua.NewDriver()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := d.Init(ctx, mapper.ProtocolConfig{Device: dev, Name: "opcua", ConfigData: json.RawMessage(cfg)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func prop(name, typ, node string) mapper.Property {
	return mapper.Property{Name: name, Type: typ, AccessMode: "ReadWrite", VisitorProtocol: "opcua", Visitor: json.RawMessage(fmt.Sprintf(`{"nodeID":%q}`, node))}
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readString(ctx context.Context, d mapper.Driver, p mapper.Property) (string, error) {
	v, err := d.Read(ctx, dev, p)
	if err != nil {
		return "", err
	}
	return mapper.FormatValue(p.Type, v)
}

// One server, each security policy × mode × login the mapper offers: reads of every type, a write
// in the node's own type that the server then holds, a refused write named.
func TestReadsAndWritesOverEverySecurityModeAndLogin(t *testing.T) {
	srv := uaserver.Start(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ name, cfg string }{
		{"None, anonymous", fmt.Sprintf(`{"url":%q,"timeout":"60s"}`, srv.URL())},
		{"Basic256Sha256 Sign, generated certificate kept in files, user name",
			fmt.Sprintf(`{"url":%q,"timeout":"60s","securityPolicy":"Basic256Sha256","securityMode":"Sign","certificate":%q,"privateKey":%q,"userName":"operator","password":%q}`,
				srv.URL(), filepath.Join(dir, "pki", "client.crt"), filepath.Join(dir, "pki", "client.key"), pw)},
		{"Basic256Sha256 SignAndEncrypt, the same certificate loaded again",
			fmt.Sprintf(`{"url":%q,"timeout":"60s","securityPolicy":"Basic256Sha256","securityMode":"SignAndEncrypt","certificate":%q,"privateKey":%q}`,
				srv.URL(), filepath.Join(dir, "pki", "client.crt"), filepath.Join(dir, "pki", "client.key"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := initDriver(t, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := d.Health(ctx, dev); err != nil {
				t.Fatal(err)
			}
			for _, r := range []struct {
				p    mapper.Property
				want string
			}{
				{prop("label", "STRING", "ns=1;s=Label"), "boiler-1"},
				{prop("running", "BOOLEAN", "ns=1;s=Running"), "true"},
			} {
				eventually(t, 30*time.Second, r.p.Name, func() error {
					s, err := readString(ctx, d, r.p)
					if err == nil && s != r.want {
						err = fmt.Errorf("read %q", s)
					}
					return err
				})
			}
			temp, err := readString(ctx, d, prop("temperature", "FLOAT", "ns=1;s=Temperature"))
			if f, perr := strconv.ParseFloat(temp, 64); err != nil || perr != nil || f < 20 {
				t.Fatalf("temperature %q %v, want a number from 20 up", temp, err)
			}
			// Writes in the node's type: Double, Int32, Boolean.
			setpoint := 30.25 + float64(i)
			count := int64(100 + i)
			for _, w := range []struct {
				p    mapper.Property
				v    mapper.Value
				node string
				want string
			}{
				{prop("setpoint", "FLOAT", "ns=1;s=Setpoint"), setpoint, "Setpoint", strconv.FormatFloat(setpoint, 'f', -1, 64)},
				{prop("count", "INT", "ns=1;s=Count"), count, "Count", strconv.FormatInt(count, 10)},
				{prop("running", "BOOLEAN", "ns=1;s=Running"), false, "Running", "false"},
			} {
				if err := d.Write(ctx, dev, w.p, w.v); err != nil {
					t.Fatalf("write %s: %v", w.p.Name, err)
				}
				if got := srv.Value(w.node); got != w.want {
					t.Fatalf("server holds %s = %s after writing %v, want %s", w.node, got, w.v, w.want)
				}
			}
			if err := d.Write(ctx, dev, prop("running", "BOOLEAN", "ns=1;s=Running"), true); err != nil {
				t.Fatal(err)
			}
			// Refusals name the node and the reason.
			err = d.Write(ctx, dev, prop("temperature", "FLOAT", "ns=1;s=Temperature"), 5.0)
			if err == nil || !strings.Contains(err.Error(), "ns=1;s=Temperature") || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("writing the read-only Temperature: %v, want a refusal naming the node", err)
			}
			err = d.Write(ctx, dev, prop("count", "INT", "ns=1;s=Count"), int64(1)<<40)
			if err == nil || !strings.Contains(err.Error(), "does not fit the node's type") {
				t.Fatalf("writing 2^40 to an Int32: %v", err)
			}
			if _, err := d.Read(ctx, dev, prop("nothing", "INT", "ns=1;s=NoSuchNode")); err == nil || !strings.Contains(err.Error(), "ns=1;s=NoSuchNode") {
				t.Fatalf("reading a node the server lacks: %v, want an error naming it", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "client.key")); err != nil {
		t.Fatalf("the generated client key was not kept: %v", err)
	}
}

// Wrong credentials, a security mode the server does not offer, a pinned certificate that is not
// the server's: each fails Init with the reason.
func TestInitRefusalsSayWhy(t *testing.T) {
	srv := uaserver.Start(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "wrong")
	os.WriteFile(bad, []byte("guess"), 0o600)
	other := filepath.Join(dir, "other.crt")
	otherKey := filepath.Join(dir, "other.key")
	d := opcua.NewDriver()
	// A certificate generated by the driver serves as "a certificate that is not the server's".
	d.Init(context.Background(), mapper.ProtocolConfig{Device: dev, ConfigData: json.RawMessage(fmt.Sprintf(
		`{"url":%q,"timeout":"60s","securityPolicy":"Basic256Sha256","certificate":%q,"privateKey":%q}`, srv.URL(), other, otherKey))})
	d.Close()
	for _, tc := range []struct{ name, cfg, want, reason string }{
		{"wrong password", fmt.Sprintf(`{"url":%q,"timeout":"60s","securityPolicy":"Basic256Sha256","userName":"operator","password":%q}`, srv.URL(), bad), "connecting to", opcua.ReasonAuthenticationFailed},
		{"wrong password from a Secret", fmt.Sprintf(`{"url":%q,"timeout":"60s","userName":{"secretKeyRef":{"name":"plc","key":"user"},"value":"operator"},"password":{"secretKeyRef":{"name":"plc","key":"password"},"value":"guess"}}`, srv.URL()),
			`password from secret plc key password`, opcua.ReasonAuthenticationFailed},
		{"Secret not delivered", fmt.Sprintf(`{"url":%q,"timeout":"60s","userName":"operator","password":{"secretKeyRef":{"name":"plc","key":"password"}}}`, srv.URL()),
			`Secret "plc" key "password" did not reach this node`, opcua.ReasonCredentialsMissing},
		{"password file missing", fmt.Sprintf(`{"url":%q,"timeout":"60s","userName":"operator","password":%q}`, srv.URL(), filepath.Join(dir, "nothing")), "reading the file", opcua.ReasonCredentialsMissing},
		{"nobody listening", `{"url":"opc.tcp://127.0.0.1:1","timeout":"2s"}`, "endpoint discovery at opc.tcp://127.0.0.1:1", ""},
		{"pinned certificate is not the server's", fmt.Sprintf(`{"url":%q,"timeout":"60s","serverCertificate":%q}`, srv.URL(), other), "not the one serverCertificate pins", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := opcua.NewDriver()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := d.Init(ctx, mapper.ProtocolConfig{Device: dev, ConfigData: json.RawMessage(tc.cfg)})
			d.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Init: %v, want %q", err, tc.want)
			}
			var re *mapper.ReasonError
			if got := ""; errors.As(err, &re) && re.Reason != tc.reason || !errors.As(err, &re) && tc.reason != "" {
				if re != nil {
					got = re.Reason
				}
				t.Fatalf("Init: reason %q, want %q (%v)", got, tc.reason, err)
			}
			if strings.Contains(err.Error(), "guess") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// With subscribe on (the default), values arrive from the server's notifications: the temperature
// keeps moving while the server answers no Read request. With subscribe off, every read is one.
func TestSubscriptionDeliversChangesWithoutReadCalls(t *testing.T) {
	srv := uaserver.Start(t)
	d := initDriver(t, fmt.Sprintf(`{"url":%q,"publishingInterval":"50ms","timeout":"60s"}`, srv.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	temp := prop("temperature", "FLOAT", "ns=1;s=Temperature")
	eventually(t, time.Minute, "a first temperature", func() error { _, err := readString(ctx, d, temp); return err })
	first, _ := readString(ctx, d, temp)
	before := srv.Reads()
	seen := map[string]bool{first: true}
	eventually(t, time.Minute, "five different temperatures", func() error {
		s, err := readString(ctx, d, temp)
		if err != nil {
			return err
		}
		seen[s] = true
		if len(seen) < 5 {
			return fmt.Errorf("%d values so far", len(seen))
		}
		return nil
	})
	if after := srv.Reads(); after != before {
		t.Fatalf("the server answered %d Read requests while values came from the subscription", after-before)
	}

	polled := initDriver(t, fmt.Sprintf(`{"url":%q,"subscribe":false,"timeout":"60s"}`, srv.URL()))
	before = srv.Reads()
	for range 3 {
		if _, err := readString(ctx, polled, temp); err != nil {
			t.Fatal(err)
		}
	}
	if after := srv.Reads(); after-before != 3 {
		t.Fatalf("subscribe off: 3 reads made %d Read requests, want 3", after-before)
	}
}

// The server killed and started again: the device is offline while it is gone, then the session
// and its subscription come back by themselves and values move again.
func TestServerRestartIsSurvivedWithoutANewDriver(t *testing.T) {
	srv := uaserver.Start(t)
	d := initDriver(t, fmt.Sprintf(`{"url":%q,"publishingInterval":"50ms","timeout":"10s"}`, srv.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	temp := prop("temperature", "FLOAT", "ns=1;s=Temperature")
	eventually(t, time.Minute, "a first temperature", func() error { _, err := readString(ctx, d, temp); return err })
	srv.Stop()
	eventually(t, time.Minute, "offline while the server is gone", func() error {
		if d.Health(ctx, dev) == nil {
			return fmt.Errorf("still healthy")
		}
		return nil
	})
	srv.Restart()
	eventually(t, 3*time.Minute, "online again", func() error { return d.Health(ctx, dev) })
	var last string
	changes := 0
	eventually(t, 2*time.Minute, "temperature moving again after the restart", func() error {
		s, err := readString(ctx, d, temp)
		if err != nil {
			return err
		}
		if last != "" && s != last {
			changes++
		}
		last = s
		if changes < 3 {
			return fmt.Errorf("%d changes", changes)
		}
		return nil
	})
}

// BenchmarkPolledReads: sequential reads of one Double with subscribe off (one Read call each).
func BenchmarkPolledReads(b *testing.B) {
	srv := uaserver.Start(b)
	d := opcua.NewDriver()
	if err := d.Init(context.Background(), mapper.ProtocolConfig{Device: dev, ConfigData: json.RawMessage(fmt.Sprintf(`{"url":%q,"subscribe":false,"timeout":"60s"}`, srv.URL()))}); err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	p := prop("setpoint", "FLOAT", "ns=1;s=Setpoint")
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := d.Read(ctx, dev, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
}
