package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The acceptance path of issue 10's ServiceBus: an HTTP call made on cloudcore (cloudbus) reaches an
// HTTP server on the edge node through the hub and the node's servicebus, and the answer comes back;
// refusals are clear HTTP answers and a slow edge service holds up no other call.
func TestServiceBusCallsAnHTTPServerOnTheEdgeThroughTheHub(t *testing.T) {
	release := make(chan struct{})
	edgeSvc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Edge-Seen", r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Caller"))
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(append([]byte("edge got: "), body...))
	}))
	defer edgeSvc.Close()
	defer close(release)
	_, svcPort, _ := net.SplitHostPort(edgeSvc.Listener.Addr().String())
	dead := freePort(t) // allowed, but nothing listens there

	c := newClusterWith(t, []string{
		"KEDGE_MODULES__SERVICEBUS__ALLOWEDPORTS=" + svcPort + "," + strconv.Itoa(dead),
		"KEDGE_MODULES__SERVICEBUS__TIMEOUT=2s",
	})
	busAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	const token = "e2e-servicebus-token-0123456789"
	c.cloudEnv = append(c.cloudEnv, "KEDGE_MODULES__CLOUDBUS__ENABLE=true",
		"KEDGE_MODULES__CLOUDBUS__ADDRESS="+busAddr, "KEDGE_MODULES__CLOUDBUS__TOKEN="+token,
		"KEDGE_MODULES__CLOUDBUS__TIMEOUT=5s")
	if code, _ := c.cloud.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d\n%s", code, c.cloud.stderr)
	}
	c.startCloud()
	waitFor(t, "edge node connected", 30*time.Second, func() (bool, string) {
		v := c.cloud.metric("kedge_cloudhub_connected_nodes")
		return v == 1, fmt.Sprint(v)
	})

	call := func(method, path, auth string, body []byte) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+busAddr+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		req.Header.Set("X-Caller", "e2e")
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	node := "/nodes/" + c.node + "/ports/"

	// The hub comes up a moment after the node's first connect; the first call that reaches the edge
	// proves the path.
	waitFor(t, "a first round trip", 30*time.Second, func() (bool, string) {
		code, body, _ := call("GET", node+svcPort+"/ping", token, nil)
		return code == http.StatusCreated, fmt.Sprint(code, " ", body)
	})

	slowDone := make(chan int, 1)
	go func() { // a slow edge service: it must hold up nothing else
		code, _, _ := call("GET", node+svcPort+"/slow", token, nil)
		slowDone <- code
	}()

	tests := []struct {
		name, method, path, auth string
		body                     []byte
		code                     int
		bodyHas, reason, seen    string
	}{
		{"GET with query and headers reaches the edge service and its answer comes back", "GET", node + svcPort + "/things?x=1&y=a%2Fb", token, nil,
			http.StatusCreated, "edge got: ", "", "GET /things?x=1&y=a%2Fb e2e"},
		{"a binary POST body arrives unchanged", "POST", node + svcPort + "/upload", token, []byte{0, 1, 2, 0xff, 'z'},
			http.StatusCreated, "edge got: \x00\x01\x02\xffz", "", "POST /upload e2e"},
		{"a port the node does not allow is refused by the node", "GET", node + "22/", token, nil,
			http.StatusForbidden, "", "port_not_allowed", ""},
		{"an allowed port where nothing listens is a bad gateway", "GET", node + strconv.Itoa(dead) + "/", token, nil,
			http.StatusBadGateway, "", "unreachable", ""},
		{"no bearer token is refused on the cloud", "GET", node + svcPort + "/", "", nil,
			http.StatusUnauthorized, "", "", ""},
		{"a node that does not exist is offline", "GET", "/nodes/ghost/ports/" + svcPort + "/", token, nil,
			http.StatusServiceUnavailable, "", "node_offline", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, h := call(tt.method, tt.path, tt.auth, tt.body)
			if code != tt.code || !strings.Contains(body, tt.bodyHas) || h.Get("X-Kedge-Servicebus-Reason") != tt.reason ||
				h.Get("X-Edge-Seen") != tt.seen {
				t.Fatalf("got %d %q (reason %q, seen %q); want %d containing %q (reason %q, seen %q)", code, body,
					h.Get("X-Kedge-Servicebus-Reason"), h.Get("X-Edge-Seen"), tt.code, tt.bodyHas, tt.reason, tt.seen)
			}
		})
	}

	t.Run("the slow edge service times out on the edge as a gateway timeout", func(t *testing.T) {
		select {
		case code := <-slowDone:
			if code != http.StatusGatewayTimeout {
				t.Fatalf("slow call: %d, want 504", code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("slow call did not end")
		}
	})

	t.Run("a node that went offline is refused at once, not queued", func(t *testing.T) {
		if code, _ := c.edge.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("edgecore exit %d", code)
		}
		waitFor(t, "node seen offline", 30*time.Second, func() (bool, string) {
			code, body, h := call("GET", node+svcPort+"/", token, nil)
			return code == http.StatusServiceUnavailable && h.Get("X-Kedge-Servicebus-Reason") == "node_offline", fmt.Sprint(code, " ", body)
		})
	})
}
