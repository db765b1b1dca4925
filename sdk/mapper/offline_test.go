package mapper

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestOfflineReasonIsFoundThroughWrappingAndOnlyWhenOffline(t *testing.T) {
	auth := WithReason("AuthenticationFailed", errors.New("the server refused user op"))
	for _, tc := range []struct {
		name, state string
		why         error
		want        string
	}{
		{"wrapped by the runtime", "offline", fmt.Errorf("init: %w", auth), `{"reason":"AuthenticationFailed","message":"init: the server refused user op"}`},
		{"joined read errors", "offline", errors.Join(errors.New("a: timeout"), auth), `"reason":"AuthenticationFailed"`},
		{"no reason", "offline", errors.New("connection refused"), "{}"},
		{"online", "online", auth, "{}"},
		{"offline without error", "offline", nil, "{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := offlineReason(tc.state, tc.why); !strings.Contains(got, tc.want) {
				t.Fatalf("offlineReason = %s, want %s", got, tc.want)
			}
		})
	}
	long := WithReason("Big", errors.New(strings.Repeat("x", 2000)))
	if got := offlineReason("offline", long); len(got) > maxPropertyError+64 {
		t.Fatalf("message not cut: %d bytes", len(got))
	}
	if WithReason("AuthenticationFailed", nil) != nil {
		t.Fatal("WithReason(nil) is not nil")
	}
	for _, bad := range []string{"", "bad reason", "lowercase", strings.Repeat("A", 65)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("WithReason(%q) did not panic", bad)
				}
			}()
			_ = WithReason(bad, errors.New("x"))
		}()
	}
}
