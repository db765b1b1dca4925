package process_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk/sdktest"
)

func TestSmoke(t *testing.T) {
	h := sdktest.RunProcess(t, filepath.Join(bin, "echo"), map[string]any{"greeting": "hi"})
	m, _ := message.New("x", "test", "greet", "r").WithContent(nil)
	r, err := h.SendSync(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", r.Content)
}
