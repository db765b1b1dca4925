package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/test/k8senv"
)

// Issue 17 item 3, with the real binaries and the real API server: a paho client publishes 2,000 QoS 1
// reported temperatures to edgecore's embedded broker (up to 200 unacknowledged), counting PUBACKs;
// edgecore is SIGKILLed when 1,000 are acknowledged. After a restart the edge store holds at least the
// last acknowledged value and the Device status in the API reaches it: nothing acknowledged is lost,
// neither on the edge nor on the way to the cloud. On the old tree the store held update 8 with 1,029
// acknowledged; without devicetwin's re-report at start the store is right but the status stays behind
// (875 with 1,009 acknowledged).
func TestAcknowledgedTwinUpdatesSurviveSIGKILLOfEdgecoreAndReachTheDeviceStatus(t *testing.T) {
	needBinaries(t)
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	api, err := devicecontroller.NewRESTClient(k8s.Config)
	if err != nil {
		t.Fatal(err)
	}
	d := &deviceRig{t: t, api: api, ns: "durable", device: "thermometer-1"}
	// The broker binds port 0 (start's default for edgecore) and the test reads the port from the log:
	// a port picked in advance can be taken meanwhile (seen: cloudcore's certificate server got it).
	d.c = newDeviceCluster(t, k8s, "e2e-durable", []string{"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal"})
	c := d.c
	broker := brokerURL(t, c.edge)
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	d.applyExamples()
	waitFor(t, "the device known on the edge (twin/get answered without an error)", 60*time.Second, func() (bool, string) {
		res, err := mqttRequest(broker, d.topic("/twin/get"), d.topic("/twin/get/result"))
		if err != nil {
			return false, err.Error()
		}
		_, refused := res["code"]
		return !refused, fmt.Sprint(res)
	})

	const total, window, killAt = 2000, 200, 1000
	value := func(i int) string { return fmt.Sprintf("%d.%02d", i/100, i%100) } // 0.00 ... 19.99
	index := func(v string) int {
		whole, frac, _ := strings.Cut(v, ".")
		a, err1 := strconv.Atoi(whole)
		b, err2 := strconv.Atoi(frac)
		if err1 != nil || err2 != nil {
			return -1
		}
		return a*100 + b
	}
	lost := make(chan struct{})
	var once sync.Once
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("durable-mapper").SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetWriteTimeout(5 * time.Second).
		SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) })
	pub := mqtt.NewClient(opts)
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the embedded broker: %v", tok.Error())
	}
	defer pub.Disconnect(0)

	base := time.Now().UnixMilli()
	toks := make([]mqtt.Token, 0, total)
	acked, killed := -1, false // acked: the highest update whose PUBACK arrived (PUBACKs come in order)
	wait := func(i int) bool {
		tok := toks[i]
		select {
		case <-tok.Done():
		case <-lost:
			if !tok.WaitTimeout(2 * time.Second) {
				return false
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("update %d: neither a PUBACK nor a lost connection within 60s", i)
		}
		if tok.Error() != nil {
			return false
		}
		acked = i
		if acked+1 == killAt && !killed {
			killed = true
			if err := c.edge.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		return true
	}
	next := 0 // the oldest update not yet waited for
	for i := 0; i < total && !isClosed(lost); i++ {
		ts := base + int64(i)
		toks = append(toks, pub.Publish(d.topic("/twin/update"), 1, false, fmt.Sprintf(
			`{"event_id":"u%d","timestamp":%d,"twin":{"temperature":{"actual":{"value":%q,"metadata":{"timestamp":%d}}}}}`, i, ts, value(i), ts)))
		for len(toks)-next >= window && next < len(toks) {
			if !wait(next) {
				next = len(toks)
				break
			}
			next++
		}
	}
	for ; next < len(toks); next++ {
		if !wait(next) {
			break
		}
	}
	if !killed {
		t.Fatalf("edgecore was not killed: only %d of %d updates acknowledged", acked+1, total)
	}
	<-c.edge.exited
	t.Logf("SIGKILL after %d PUBACKs; %d updates published", acked+1, len(toks))
	if acked < killAt-1 {
		t.Fatalf("only %d updates acknowledged", acked+1)
	}

	c.startEdge() // same store, same config
	broker = brokerURL(t, c.edge)
	waitFor(t, "edge node Ready again", 60*time.Second, c.nodeReady)
	var stored int
	waitFor(t, "twin/get answered by the restarted edge", 60*time.Second, func() (bool, string) {
		res, err := mqttRequest(broker, d.topic("/twin/get"), d.topic("/twin/get/result"))
		if err != nil {
			return false, err.Error()
		}
		var v string
		if tw, ok := res["twin"].(map[string]any); ok {
			if temp, ok := tw["temperature"].(map[string]any); ok {
				if actual, ok := temp["actual"].(map[string]any); ok {
					v, _ = actual["value"].(string)
				}
			}
		}
		stored = index(v)
		return v != "", fmt.Sprint(res)
	})
	if stored < acked {
		t.Fatalf("the edge store holds update %d after the restart; update %d was acknowledged", stored, acked)
	}
	waitFor(t, fmt.Sprintf("Device status at the last acknowledged update %d (or a later stored one)", acked), 90*time.Second, func() (bool, string) {
		tw := d.twin("temperature")
		return index(tw.Reported.Value) >= acked, fmt.Sprintf("reported %q (update %d), %+v", tw.Reported.Value, index(tw.Reported.Value), tw.Reported)
	})
}

// brokerURL reads the embedded broker's address from edgecore's log.
func brokerURL(t *testing.T, d *daemon) string {
	t.Helper()
	re := regexp.MustCompile(`msg="embedded MQTT broker listening".*address=(127\.0\.0\.1:[0-9]+)`)
	var addr string
	waitFor(t, "the embedded broker's address in edgecore's log", 30*time.Second, func() (bool, string) {
		m := re.FindStringSubmatch(d.stderr.String())
		if m == nil {
			return false, "not logged yet"
		}
		addr = m[1]
		return true, ""
	})
	return "tcp://" + addr
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// mqttRequest publishes {"event_id"} on topic with a fresh client and returns the answer on
// resultTopic carrying that event_id.
func mqttRequest(broker, topic, resultTopic string) (map[string]any, error) {
	id := fmt.Sprintf("req-%d", time.Now().UnixNano())
	got := make(chan map[string]any, 1)
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", broker, tok.Error())
	}
	defer cl.Disconnect(0)
	if tok := cl.Subscribe(resultTopic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var p map[string]any
		if json.Unmarshal(m.Payload(), &p) == nil && p["event_id"] == id {
			select {
			case got <- p:
			default:
			}
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscribe %s: %v", resultTopic, tok.Error())
	}
	if tok := cl.Publish(topic, 1, false, `{"event_id":"`+id+`"}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("publish %s: %v", topic, tok.Error())
	}
	select {
	case p := <-got:
		return p, nil
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("no answer on %s within 10s", resultTopic)
	}
}
