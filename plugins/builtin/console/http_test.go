package console

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

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
