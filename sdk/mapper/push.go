package mapper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// pushPayload is what a reading looks like on a push target (MQTT message body, HTTP POST body).
type pushPayload struct {
	Device    string `json:"device"`
	Property  string `json:"property"`
	Value     string `json:"value"`
	Type      string `json:"type"`
	Timestamp int64  `json:"timestamp"`
}

// pushDest is one property's push target, checked (pushSpec).
type pushDest struct {
	method string // "mqtt" or "http"
	key    string // identifies the target's queue
	// http
	url     string
	timeout time.Duration
	// mqtt
	broker, topic string
	qos           byte
	retained      bool
}

// pushSpec turns a property's pushMethod into its target. nil, nil: no push (none given); an error
// names the field that is wrong (or says the method is not supported).
func pushSpec(pm *dmiv1beta1.PushMethod, callTimeout time.Duration) (*pushDest, error) {
	switch {
	case pm == nil:
		return nil, nil
	case pm.GetMqtt() != nil:
		q := pm.GetMqtt()
		var errs []error
		broker := strings.TrimSpace(q.GetAddress())
		if broker == "" {
			errs = append(errs, errors.New("pushMethod.mqtt.address is empty"))
		} else if !strings.Contains(broker, "://") {
			broker = "tcp://" + broker
		}
		if q.GetTopic() == "" {
			errs = append(errs, errors.New("pushMethod.mqtt.topic is empty"))
		}
		if q.GetQos() < 0 || q.GetQos() > 2 {
			errs = append(errs, fmt.Errorf("pushMethod.mqtt.qos %d is not 0, 1 or 2", q.GetQos()))
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return &pushDest{method: "mqtt", broker: broker, topic: q.GetTopic(), qos: byte(q.GetQos()), retained: q.GetRetained(), timeout: callTimeout,
			key: fmt.Sprintf("mqtt %s %s qos=%d retained=%t", broker, q.GetTopic(), q.GetQos(), q.GetRetained())}, nil
	case pm.GetHttp() != nil:
		h := pm.GetHttp()
		var errs []error
		if strings.TrimSpace(h.GetHostname()) == "" {
			errs = append(errs, errors.New("pushMethod.http.hostName is empty"))
		}
		if h.GetPort() <= 0 || h.GetPort() > 65535 {
			errs = append(errs, fmt.Errorf("pushMethod.http.port %d is not a TCP port", h.GetPort()))
		}
		if h.GetTimeout() < 0 {
			errs = append(errs, fmt.Errorf("pushMethod.http.timeout %d is negative", h.GetTimeout()))
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		path := h.GetRequestpath()
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		host := strings.TrimPrefix(strings.TrimPrefix(h.GetHostname(), "http://"), "https://")
		url := "http://" + net.JoinHostPort(host, strconv.FormatInt(h.GetPort(), 10)) + path
		timeout := time.Duration(h.GetTimeout()) * time.Millisecond
		if timeout == 0 {
			timeout = callTimeout
		}
		return &pushDest{method: "http", url: url, timeout: timeout, key: "http " + url}, nil
	case pm.GetOtel() != nil:
		return nil, errors.New("pushMethod.otel is not supported (mqtt and http are)")
	case pm.GetDbMethod() != nil:
		return nil, errors.New("pushMethod.dbMethod is not supported (mqtt and http are)")
	}
	return nil, nil
}

type pushMetrics struct {
	pushes, errors, dropped *prometheus.CounterVec // method
}

func newPushMetrics() *pushMetrics {
	return &pushMetrics{
		pushes:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_pushes_total", Help: "Readings delivered to a property's pushMethod target, per method."}, []string{"method"}),
		errors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_push_errors_total", Help: "Readings a pushMethod target did not take (unreachable, refused, timed out), per method."}, []string{"method"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_push_dropped_total", Help: "Readings dropped unsent because the target's push queue was full (the oldest goes), per method."}, []string{"method"}),
	}
}

func (pm *pushMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{pm.pushes, pm.errors, pm.dropped}
}

// pusher sends readings to push targets: one bounded queue and goroutine per target, one MQTT
// client per broker address (shared by its targets, reconnecting by itself). Nothing here waits
// on a target from the device goroutine.
type pusher struct {
	log      *slog.Logger
	metrics  *pushMetrics
	queueLen int
	clientID string
	httpc    *http.Client
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	targets map[string]*pushTarget
	clients map[string]mqtt.Client // broker address
}

type pushTarget struct {
	dest    pushDest
	q       chan []byte
	lastLog time.Time // of a failure; only the worker touches it
}

func newPusher(log *slog.Logger, mt *pushMetrics, queueLen int, clientID string) *pusher {
	ctx, cancel := context.WithCancel(context.Background())
	return &pusher{log: log, metrics: mt, queueLen: max(queueLen, 1), clientID: clientID,
		httpc: &http.Client{}, ctx: ctx, cancel: cancel,
		targets: map[string]*pushTarget{}, clients: map[string]mqtt.Client{}}
}

// push queues one reading for d's target and returns at once. When the queue is full the oldest
// queued reading is dropped (counted).
func (p *pusher) push(d *pushDest, body pushPayload) {
	b, err := json.Marshal(body)
	if err != nil {
		return
	}
	t := p.target(d)
	if t == nil {
		return
	}
	for {
		select {
		case t.q <- b:
			return
		default:
		}
		select {
		case <-t.q:
			p.metrics.dropped.WithLabelValues(d.method).Inc()
		default:
		}
	}
}

func (p *pusher) target(d *pushDest) *pushTarget {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if t := p.targets[d.key]; t != nil {
		return t
	}
	t := &pushTarget{dest: *d, q: make(chan []byte, p.queueLen)}
	p.targets[d.key] = t
	if d.method == "mqtt" && p.clients[d.broker] == nil {
		p.clients[d.broker] = p.newMQTT(d.broker)
	}
	p.wg.Add(1)
	go p.work(t)
	return t
}

func (p *pusher) newMQTT(broker string) mqtt.Client {
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("%s-%d", p.clientID, len(p.clients)+1)).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(30 * time.Second).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	c.Connect() // keeps retrying in the background; publishes fail fast until connected
	return c
}

func (p *pusher) work(t *pushTarget) {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case b := <-t.q:
			err := p.send(t, b)
			if err == nil {
				p.metrics.pushes.WithLabelValues(t.dest.method).Inc()
				continue
			}
			if p.ctx.Err() != nil {
				return
			}
			p.metrics.errors.WithLabelValues(t.dest.method).Inc()
			if now := time.Now(); now.Sub(t.lastLog) >= time.Minute {
				t.lastLog = now
				p.log.Warn("push failed; further failures to this target are counted and logged at most once a minute",
					"target", t.dest.key, "err", err)
			}
		}
	}
}

func (p *pusher) send(t *pushTarget, b []byte) error {
	d := &t.dest
	switch d.method {
	case "mqtt":
		p.mu.Lock()
		c := p.clients[d.broker]
		p.mu.Unlock()
		if c == nil || !c.IsConnectionOpen() {
			return fmt.Errorf("mqtt broker %s: not connected", d.broker)
		}
		tok := c.Publish(d.topic, d.qos, d.retained, b)
		if !tok.WaitTimeout(d.timeout) {
			return fmt.Errorf("mqtt broker %s: publish to %q not acknowledged within %s", d.broker, d.topic, d.timeout)
		}
		return tok.Error()
	case "http":
		ctx, cancel := context.WithTimeout(p.ctx, d.timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := p.httpc.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST %s: %s", d.url, resp.Status)
		}
		return nil
	}
	return fmt.Errorf("push method %q unknown", d.method)
}

// close stops the workers (queued readings are dropped) and disconnects the MQTT clients.
func (p *pusher) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.Disconnect(250)
	}
	p.clients = map[string]mqtt.Client{}
	p.httpc.CloseIdleConnections()
}
