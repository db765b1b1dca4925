package eventbus_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/eventbus"
	"github.com/kedge-io/kedge/sdk"
)

// runEventbus starts eventbus through the real host and returns its instance (for BrokerAddr).
func runEventbus(t *testing.T, cfg map[string]any, opts ...sdktest.Option) (*sdktest.Harness, *eventbus.Module) {
	t.Helper()
	var inst *eventbus.Module
	info := eventbus.Info
	info.New = func() sdk.Module { inst = eventbus.New(); return inst }
	h := sdktest.Run(t, info, cfg, opts...)
	waitFor(t, 10*time.Second, "eventbus connected and subscribed", func() error { return h.Healthy() })
	return h, inst
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupMailbox registers a mailbox in a routing group (the harness captures only by name).
func groupMailbox(t *testing.T, h *sdktest.Harness, name, group string) *router.Mailbox {
	t.Helper()
	mb, err := h.Router.Register(name, group, router.Options{Capacity: 1024, Policy: router.Block})
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

func receive(t *testing.T, mb *router.Mailbox, d time.Duration) sdk.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := mb.Receive(ctx)
	if err != nil {
		t.Fatalf("nothing in %s within %s: %v", mb.Name(), d, err)
	}
	return m
}

// pahoClient is a test-side MQTT client that records what it receives.
type pahoClient struct {
	c    mqtt.Client
	mu   sync.Mutex
	msgs chan mqtt.Message
}

func newPaho(t *testing.T, addr, id string) *pahoClient {
	t.Helper()
	p := &pahoClient{msgs: make(chan mqtt.Message, 1024)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(true)
	p.c = mqtt.NewClient(opts)
	if tok := p.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("test client connect to %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { p.c.Disconnect(100) })
	return p
}

func (p *pahoClient) subscribe(t *testing.T, filter string, qos byte) {
	t.Helper()
	tok := p.c.Subscribe(filter, qos, func(_ mqtt.Client, m mqtt.Message) { p.msgs <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (p *pahoClient) publish(t *testing.T, topic string, qos byte, payload string) {
	t.Helper()
	tok := p.c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// answer replies to a sync message as devicetwin does once the update is stored.
func answer(t testing.TB, h *sdktest.Harness, m sdk.Message) {
	t.Helper()
	r, err := m.Reply("devicetwin", map[string]int{"code": 200})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Reply(r); err != nil {
		t.Fatal(err)
	}
}

func (p *pahoClient) next(t *testing.T, d time.Duration) mqtt.Message {
	t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case <-time.After(d):
		t.Fatalf("test MQTT client: nothing received within %s", d)
		return nil
	}
}

// ensureMosquitto installs Debian's mosquitto and clients when missing; it fails, never skips.
func ensureMosquitto(t *testing.T) {
	t.Helper()
	need := false
	for _, bin := range []string{"mosquitto", "mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				need = true
			}
		}
	}
	if !need {
		return
	}
	out, err := exec.Command("apt-get", "install", "-y", "mosquitto", "mosquitto-clients").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto is needed for this test and apt-get install -y mosquitto mosquitto-clients failed: %v\n%s", err, out)
	}
}

func mosquittoBin() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return "/usr/sbin/mosquitto"
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mosquitto is a real mosquitto on a loopback port with its own config, never the system service.
type mosquitto struct {
	t    *testing.T
	port int
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	log  *strings.Builder
}

func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	ensureMosquitto(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mq := &mosquitto{t: t, port: freePort(t), conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n", mq.port)
	if err := os.WriteFile(mq.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	mq.start()
	t.Cleanup(mq.stop)
	return mq
}

func (mq *mosquitto) addr() string { return fmt.Sprintf("127.0.0.1:%d", mq.port) }

func (mq *mosquitto) start() {
	mq.t.Helper()
	mq.log = &strings.Builder{}
	mq.cmd = exec.Command(mosquittoBin(), "-c", mq.conf)
	mq.cmd.Stdout, mq.cmd.Stderr = &lockedWriter{b: mq.log}, &lockedWriter{b: mq.log}
	if err := mq.cmd.Start(); err != nil {
		mq.t.Fatalf("start mosquitto: %v", err)
	}
	mq.done = make(chan struct{})
	go func() { _ = mq.cmd.Wait(); close(mq.done) }()
	waitFor(mq.t, 10*time.Second, "mosquitto listening on "+mq.addr(), func() error {
		select {
		case <-mq.done:
			return fmt.Errorf("mosquitto exited")
		default:
		}
		c, err := net.DialTimeout("tcp", mq.addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func (mq *mosquitto) stop() {
	if mq.cmd == nil || mq.cmd.Process == nil {
		return
	}
	select {
	case <-mq.done:
	default:
		_ = mq.cmd.Process.Kill() // only the process this test started, by its id
		<-mq.done
	}
	mq.cmd = nil
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// metricValue sums the samples of a metric family whose labels include labelValue ("" = all).
func metricValue(t testing.TB, h *sdktest.Harness, name, labelValue string) float64 {
	t.Helper()
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := labelValue == ""
			for _, l := range m.GetLabel() {
				if l.GetValue() == labelValue {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}
