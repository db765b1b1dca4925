package console

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

func TestFilterAcceptsOnlyOneWellFormedLabelSelector(t *testing.T) {
	for _, tc := range []struct {
		query   string
		wantErr string // empty: accepted
		matches labels.Set
	}{
		{"", "", labels.Set{"any": "thing"}},
		{"label=site%3Dberlin", "", labels.Set{"site": "berlin"}},
		{"label=site%3Dberlin%2C%21canary", "", labels.Set{"site": "berlin"}},
		{"label=a+in+(", "is not a label selector", nil},
		{"label=!!", "is not a label selector", nil},
		{"node=x", `unknown query parameter "node"`, nil},
		{"label=a&label=b", "more than once", nil},
		{"label=" + strings.Repeat("a", 1025), "longer than 1024 bytes", nil},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		sel, _, err := filter(q)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: refused: %v", tc.query, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one containing %q", tc.query, err, tc.wantErr)
		case tc.wantErr == "" && !sel.Matches(tc.matches):
			t.Errorf("%q: selector %s does not match %v", tc.query, sel, tc.matches)
		}
	}
}

func TestCSRFTokenIsBoundToTheSessionAndTheProcessKey(t *testing.T) {
	key, other := []byte("k1"), []byte("k2")
	tok := csrfToken(key, "session-a")
	for _, tc := range []struct {
		name    string
		key     []byte
		session string
		got     string
		want    bool
	}{
		{"same session and key", key, "session-a", tok, true},
		{"another session", key, "session-b", tok, false},
		{"another process key", other, "session-a", tok, false},
		{"empty", key, "session-a", "", false},
		{"truncated", key, "session-a", tok[:10], false},
	} {
		if got := validCSRF(tc.key, tc.session, tc.got); got != tc.want {
			t.Errorf("%s: valid=%v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSameOriginRefusesOnlyAnotherNamedOrigin(t *testing.T) {
	for _, tc := range []struct {
		origin string
		want   bool
	}{
		{"", true},
		{"null", true}, // opaque: the CSRF token decides
		{"https://console.example:10008", true},
		{"https://evil.example", false},
		{"https://console.example:443", false},
		{"http://console.example:10008", true}, // same host and port; TLS is the only scheme served
	} {
		r := httptest.NewRequest(http.MethodPost, "https://console.example:10008/logout", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := sameOrigin(r); got != tc.want {
			t.Errorf("Origin %q: same=%v, want %v", tc.origin, got, tc.want)
		}
	}
}

func TestParseQueryTakesOnlyEachViewsParameters(t *testing.T) {
	for _, tc := range []struct {
		view, query string
		stream      bool
		wantErr     string
		want        query
	}{
		{"fleet", "page=3&label=a%3Db", false, "", query{view: "fleet", label: "a=b", page: 3}},
		{"fleet", "page=0", false, "page", query{}},
		{"fleet", "page=-1", false, "page", query{}},
		{"fleet", "page=1e3", false, "page", query{}},
		{"fleet", "name=x", false, `unknown query parameter "name" (the fleet view takes label, page)`, query{}},
		{"node", "name=edge-1", false, "", query{view: "node", name: "edge-1", page: 1}},
		{"node", "", false, "name (the node) is missing", query{}},
		{"node", "name=..%2Fsecret", false, "not a node name", query{}},
		{"node", "name=a&name=b", false, "more than once", query{}},
		{"devices", "node=edge-1&page=2", false, "", query{view: "devices", node: "edge-1", page: 2}},
		{"devices", "label=x", false, `unknown query parameter "label"`, query{}},
		{"rollouts", "", false, "", query{view: "rollouts", page: 1}},
		{"rollouts", "page=2", false, "takes none", query{}},
		{"", "", true, "", query{view: "fleet", page: 1}},
		{"", "view=node&name=edge-1", true, "", query{view: "node", name: "edge-1", page: 1}},
		{"", "view=secrets", true, `view is "secrets"`, query{}},
		{"", "view=node&view=fleet", true, "more than once", query{}},
		{"", "view=rollouts&label=x", true, "unknown query parameter", query{}},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseQuery(tc.view, q, tc.stream)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s %q: error %v, want one containing %q", tc.view, tc.query, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s %q: refused: %v", tc.view, tc.query, err)
		case tc.wantErr == "" && (got.view != tc.want.view || got.label != tc.want.label || got.name != tc.want.name || got.node != tc.want.node || got.page != tc.want.page):
			t.Errorf("%s %q: %+v, want %+v", tc.view, tc.query, got, tc.want)
		}
	}
}

func TestPaginateClampsThePageAndKeepsTheFilterInItsLinks(t *testing.T) {
	for _, tc := range []struct {
		n, page, size     int
		wantPage, lo, hi  int
		wantPrev, wantNxt string
	}{
		{0, 1, 100, 1, 0, 0, "", ""},
		{1000, 1, 100, 1, 0, 100, "", "?label=a%3Db&page=2"},
		{1000, 2, 100, 2, 100, 200, "?label=a%3Db", "?label=a%3Db&page=3"},
		{1000, 99, 100, 10, 900, 1000, "?label=a%3Db&page=9", ""},
		{250, 3, 100, 3, 200, 250, "?label=a%3Db&page=2", ""},
	} {
		p, lo, hi := paginate(tc.n, tc.page, tc.size, url.Values{"label": {"a=b"}})
		if p.Page != tc.wantPage || lo != tc.lo || hi != tc.hi || p.Prev != tc.wantPrev || p.Next != tc.wantNxt {
			t.Errorf("paginate(%d, page %d, size %d) = %+v [%d:%d], want page %d [%d:%d] prev %q next %q",
				tc.n, tc.page, tc.size, p, lo, hi, tc.wantPage, tc.lo, tc.hi, tc.wantPrev, tc.wantNxt)
		}
	}
}

func TestReconnectsCountOnlyAConnectAfterADisconnectWithinTheHour(t *testing.T) {
	f := newFleet(nil, nil, nil, time.Hour, "default", 100)
	t0 := time.Now().Add(-3 * time.Hour)
	f.setLink("a", true, t0)                           // first connect: not a reconnect
	f.setLink("a", false, t0.Add(time.Minute))         // drop
	f.setLink("a", true, t0.Add(2*time.Minute))        // reconnect, over two hours ago
	f.setLink("a", true, time.Now().Add(-time.Hour/2)) // connected again without a disconnect seen: not counted
	f.setLink("a", false, time.Now().Add(-time.Minute))
	f.setLink("a", true, time.Now())
	f.setLink("b", true, time.Now())
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := len(recent(f.reconnects["a"], time.Now())); got != 1 {
		t.Errorf("node a: %d reconnects in the last hour, want 1", got)
	}
	if got := len(f.reconnects["b"]); got != 0 {
		t.Errorf("node b connected once: %d reconnects, want 0", got)
	}
}

func TestOpenPagesShowingTheSameShareOneRenderingPerChange(t *testing.T) {
	var r renders
	calls := 0
	do := func() ([]byte, error) { calls++; return []byte(fmt.Sprint(calls)), nil }
	fleet := query{view: "fleet", page: 1}
	admin := &user{Nodes: true, Pods: true, Devices: true}
	noDevices := &user{Nodes: true, Pods: true}
	for _, tc := range []struct {
		name    string
		version uint64
		v       query
		u       *user
		calls   int
	}{
		{"first page", 1, fleet, admin, 1},
		{"second page, same view and permissions", 1, fleet, admin, 1},
		{"another user with the same permissions", 1, fleet, &user{Name: "other", Nodes: true, Pods: true, Devices: true}, 1},
		{"a user who may not list devices", 1, fleet, noDevices, 2},
		{"another page of the fleet", 1, query{view: "fleet", page: 2}, admin, 3},
		{"the next change", 2, fleet, admin, 4},
		{"rollouts carry the session's CSRF token: never shared", 2, query{view: "rollouts"}, admin, 5},
		{"rollouts again", 2, query{view: "rollouts"}, admin, 6},
	} {
		if _, err := r.get(tc.version, tc.v, tc.u, do); err != nil {
			t.Fatal(err)
		}
		if calls != tc.calls {
			t.Errorf("%s: %d renderings, want %d", tc.name, calls, tc.calls)
		}
	}
	if len(r.entries) != 1 {
		t.Errorf("%d renderings kept, want only the latest change's (1)", len(r.entries))
	}
}
