package mapper

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// counterDriver reads 1, 2, 3... per property.
type counterDriver struct{ n map[string]int64 }

func (d *counterDriver) Init(context.Context, ProtocolConfig) error {
	d.n = map[string]int64{}
	return nil
}
func (d *counterDriver) Read(_ context.Context, _ DeviceRef, p Property) (Value, error) {
	d.n[p.Name]++
	return d.n[p.Name], nil
}
func (d *counterDriver) Write(context.Context, DeviceRef, Property, Value) error { return nil }
func (d *counterDriver) Health(context.Context, DeviceRef) error                 { return nil }
func (d *counterDriver) Close() error                                            { return nil }

// edgeDMI is edgecore's side of DMI for these tests: it hands out one device and records reports.
type edgeDMI struct {
	dmiv1beta1.UnimplementedDeviceManagerServiceServer
	device *dmiv1beta1.Device
	model  *dmiv1beta1.DeviceModel

	mu       sync.Mutex
	reported map[string][]string // property → values in report order
}

func (e *edgeDMI) MapperRegister(context.Context, *dmiv1beta1.MapperRegisterRequest) (*dmiv1beta1.MapperRegisterResponse, error) {
	return &dmiv1beta1.MapperRegisterResponse{ModelList: []*dmiv1beta1.DeviceModel{e.model}, DeviceList: []*dmiv1beta1.Device{e.device}}, nil
}

func (e *edgeDMI) ReportDeviceStatus(_ context.Context, r *dmiv1beta1.ReportDeviceStatusRequest) (*dmiv1beta1.ReportDeviceStatusResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, tw := range r.GetReportedDevice().GetTwins() {
		e.reported[tw.GetPropertyName()] = append(e.reported[tw.GetPropertyName()], tw.GetReported().GetValue())
	}
	return &dmiv1beta1.ReportDeviceStatusResponse{}, nil
}

func (e *edgeDMI) ReportDeviceStates(context.Context, *dmiv1beta1.ReportDeviceStatesRequest) (*dmiv1beta1.ReportDeviceStatesResponse, error) {
	return &dmiv1beta1.ReportDeviceStatesResponse{}, nil
}

func (e *edgeDMI) reports(prop string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reported[prop])
}

// runPushMapper serves edgeDMI on a unix socket and runs a mapper of protocol "counter" with one
// device whose properties "temp" (INT) and "level" (INT) push with the given methods.
func runPushMapper(t *testing.T, temp, level *dmiv1beta1.PushMethod, cfg map[string]any) (*sdktest.Harness, *edgeDMI) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mpush")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e := &edgeDMI{reported: map[string][]string{},
		model: &dmiv1beta1.DeviceModel{Name: "counters", Namespace: "default", Spec: &dmiv1beta1.DeviceModelSpec{Properties: []*dmiv1beta1.ModelProperty{
			{Name: "temp", Type: "INT", AccessMode: "ReadOnly"}, {Name: "level", Type: "INT", AccessMode: "ReadOnly"}}}},
		device: &dmiv1beta1.Device{Name: "c1", Namespace: "default", Spec: &dmiv1beta1.DeviceSpec{DeviceModelReference: "counters",
			Protocol: &dmiv1beta1.ProtocolConfig{ProtocolName: "counter"},
			Properties: []*dmiv1beta1.DeviceProperty{
				{Name: "temp", CollectCycle: 10, ReportToCloud: true, PushMethod: temp},
				{Name: "level", CollectCycle: 10, ReportToCloud: true, PushMethod: level}}}}}
	lis, err := net.Listen("unix", filepath.Join(dir, "dmi.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dmiv1beta1.RegisterDeviceManagerServiceServer(srv, e)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	full := map[string]any{"dmiSocket": filepath.Join(dir, "dmi.sock"), "socket": filepath.Join(dir, "counter.sock"),
		"collectCycle": "10ms", "healthCycle": "50ms", "backoffMin": "10ms", "backoffMax": "100ms"}
	for k, v := range cfg {
		full[k] = v
	}
	info := sdk.Info{Name: "countermapper", Group: "mapper", Doc: "test mapper",
		New: func() sdk.Module { return New("counter", func() Driver { return &counterDriver{} }) }}
	h := sdktest.Run(t, info, full)
	t.Cleanup(func() { _ = h.Stop() })
	return h, e
}

// startBroker runs an embedded MQTT broker on a free loopback port.
func startBroker(t *testing.T) string {
	t.Helper()
	s := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return l.Address()
}

// subscribe connects a paho client to addr and collects what arrives on topic.
func subscribe(t *testing.T, addr, topic string) <-chan []byte {
	t.Helper()
	ch := make(chan []byte, 4096)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sub-" + t.Name()))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	if tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case ch <- append([]byte(nil), m.Payload()...):
		default:
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	return ch
}

func counter(t *testing.T, g prometheus.Gatherer, name, method string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && l.GetValue() == method {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkPayload(t *testing.T, b []byte, prop string) int64 {
	t.Helper()
	var p pushPayload
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
	n, err := strconv.ParseInt(p.Value, 10, 64)
	if p.Device != "default/c1" || p.Property != prop || p.Type != "INT" || err != nil || p.Timestamp <= 0 {
		t.Fatalf("payload %s: want device default/c1, property %s, an INT value and a timestamp", b, prop)
	}
	return n
}

func TestReadingsArePushedToMQTTAndHTTPAndStillReported(t *testing.T) {
	broker := startBroker(t)
	msgs := subscribe(t, broker, "devices/c1/temp")
	posts := make(chan []byte, 4096)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/readings" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want POST /readings with JSON", http.StatusBadRequest)
			return
		}
		select {
		case posts <- b:
		default:
		}
	}))
	t.Cleanup(hs.Close)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(hs.URL, "http://"))
	p, _ := strconv.ParseInt(port, 10, 64)
	h, e := runPushMapper(t,
		&dmiv1beta1.PushMethod{Mqtt: &dmiv1beta1.PushMethodMQTT{Address: "tcp://" + broker, Topic: "devices/c1/temp", Qos: 1}},
		&dmiv1beta1.PushMethod{Http: &dmiv1beta1.PushMethodHTTP{Hostname: host, Port: p, Requestpath: "/readings", Timeout: 2000}}, nil)

	for _, tc := range []struct {
		method, prop string
		ch           <-chan []byte
	}{{"mqtt", "temp", msgs}, {"http", "level", posts}} {
		var last int64
		for got := 0; got < 3; {
			select {
			case b := <-tc.ch:
				n := checkPayload(t, b, tc.prop)
				if n <= last {
					t.Fatalf("%s: value %d after %d; readings out of order", tc.method, n, last)
				}
				last = n
				got++
			case <-time.After(15 * time.Second):
				t.Fatalf("%s: fewer than 3 readings of %s pushed within 15s", tc.method, tc.prop)
			}
		}
	}
	waitUntil(t, 10*time.Second, "readings reported to edgecore besides being pushed", func() bool { return e.reports("temp") >= 3 && e.reports("level") >= 3 })
	for _, m := range []string{"mqtt", "http"} {
		if n := counter(t, h.Metrics, "kedge_mapper_pushes_total", m); n < 3 {
			t.Errorf("kedge_mapper_pushes_total{method=%s} = %v, want >= 3", m, n)
		}
	}
}

func TestDeadPushTargetsNeitherSlowNorFailReadings(t *testing.T) {
	// a port nobody listens on (MQTT), and an HTTP server that accepts and never answers
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	_ = l.Close()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(hang.URL, "http://"))
	p, _ := strconv.ParseInt(port, 10, 64)
	h, e := runPushMapper(t,
		&dmiv1beta1.PushMethod{Mqtt: &dmiv1beta1.PushMethodMQTT{Address: deadAddr, Topic: "t"}},
		&dmiv1beta1.PushMethod{Http: &dmiv1beta1.PushMethodHTTP{Hostname: host, Port: p, Requestpath: "/x", Timeout: 30000}},
		map[string]any{"pushQueue": 4})
	// 30 readings at 10ms each; a push waiting on its target (30s per HTTP request) would take
	// far longer than the deadline.
	waitUntil(t, 15*time.Second, "30 readings of each property reported while both push targets are dead", func() bool {
		return e.reports("temp") >= 30 && e.reports("level") >= 30
	})
	waitUntil(t, 10*time.Second, "the dead MQTT broker's failures counted", func() bool {
		return counter(t, h.Metrics, "kedge_mapper_push_errors_total", "mqtt") > 0
	})
	waitUntil(t, 10*time.Second, "readings for the hung HTTP target dropped from its full queue", func() bool {
		return counter(t, h.Metrics, "kedge_mapper_push_dropped_total", "http") > 0
	})
}

func TestFullPushQueueDropsTheOldestReading(t *testing.T) {
	got := make(chan string, 16)
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p pushPayload
		_ = json.NewDecoder(r.Body).Decode(&p)
		got <- p.Value
		entered <- struct{}{}
		<-release
	}))
	t.Cleanup(hs.Close)
	mt := newPushMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(mt.collectors()...)
	ps := newPusher(slog.New(slog.NewTextHandler(io.Discard, nil)), mt, 2, "t")
	t.Cleanup(ps.close)
	d := &pushDest{method: "http", url: hs.URL + "/r", timeout: 30 * time.Second, key: "http " + hs.URL}
	send := func(i int) { ps.push(d, pushPayload{Device: "d", Property: "p", Value: fmt.Sprint(i), Type: "INT"}) }
	send(1)
	select {
	case <-entered: // reading 1 is being sent; the target holds it
	case <-time.After(10 * time.Second):
		t.Fatal("first reading not sent within 10s")
	}
	for i := 2; i <= 5; i++ { // queue of 2: 2 and 3 are dropped for 4 and 5
		send(i)
	}
	if n := counter(t, reg, "kedge_mapper_push_dropped_total", "http"); n != 2 {
		t.Fatalf("dropped = %v, want 2", n)
	}
	close(release)
	var seq []string
	for len(seq) < 3 {
		select {
		case v := <-got:
			seq = append(seq, v)
		case <-time.After(10 * time.Second):
			t.Fatalf("sent so far %v; want 1, 4, 5", seq)
		}
	}
	if strings.Join(seq, ",") != "1,4,5" {
		t.Fatalf("sent %v, want 1, 4, 5 (the oldest queued dropped)", seq)
	}
}

func TestPushMethodErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		pm   *dmiv1beta1.PushMethod
		want string // "" : accepted
	}{
		{"no push method", nil, ""},
		{"mqtt without address", &dmiv1beta1.PushMethod{Mqtt: &dmiv1beta1.PushMethodMQTT{Topic: "t"}}, "mqtt.address"},
		{"mqtt without topic", &dmiv1beta1.PushMethod{Mqtt: &dmiv1beta1.PushMethodMQTT{Address: "127.0.0.1:1883"}}, "mqtt.topic"},
		{"mqtt qos 3", &dmiv1beta1.PushMethod{Mqtt: &dmiv1beta1.PushMethodMQTT{Address: "a:1", Topic: "t", Qos: 3}}, "mqtt.qos"},
		{"http without host", &dmiv1beta1.PushMethod{Http: &dmiv1beta1.PushMethodHTTP{Port: 80}}, "http.hostName"},
		{"http port 0", &dmiv1beta1.PushMethod{Http: &dmiv1beta1.PushMethodHTTP{Hostname: "h"}}, "http.port"},
		{"otel", &dmiv1beta1.PushMethod{Otel: &dmiv1beta1.PushMethodOTEL{}}, "otel is not supported"},
		{"valid mqtt", &dmiv1beta1.PushMethod{Mqtt: &dmiv1beta1.PushMethodMQTT{Address: "127.0.0.1:1883", Topic: "t"}}, ""},
		{"valid http", &dmiv1beta1.PushMethod{Http: &dmiv1beta1.PushMethodHTTP{Hostname: "h", Port: 8080, Requestpath: "in"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := pushSpec(tc.pm, time.Second)
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
			if tc.name == "valid http" && d.url != "http://h:8080/in" {
				t.Fatalf("url = %s", d.url)
			}
			if tc.name == "valid mqtt" && d.broker != "tcp://127.0.0.1:1883" {
				t.Fatalf("broker = %s", d.broker)
			}
		})
	}
}
