package cloudhub

import (
	"bytes"
	"context"
	"runtime"
	"testing"
)

// senders counts the goroutines running a session's sender (Module.send).
func senders() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return bytes.Count(buf, []byte("cloudhub.(*Module).send("))
}

// TestAnIdleSessionRunsNoSenderAndOneStartsForWhatIsQueued proves what an idle connected node costs:
// no sender goroutine while nothing is queued or unacknowledged; a message queued later starts one,
// which delivers it, stays while the message waits for its acknowledgement, and ends after it; and the
// next message starts a sender again.
func TestAnIdleSessionRunsNoSenderAndOneStartsForWhatIsQueued(t *testing.T) {
	c := startCloud(t, nil)
	r := newRawNode(t, c, "idle-sender")
	r.dial(c)
	eventually(t, "no sender for the idle node", func() bool { return senders() == 0 })
	for i := 1; i <= 2; i++ {
		c.send(t, r.name, "p", i)
		m := r.receive()
		if m.Header.ResourceVersion != string(rune('0'+i)) {
			t.Fatalf("message %d: got version %q", i, m.Header.ResourceVersion)
		}
		if got := senders(); got != 1 {
			t.Fatalf("message %d delivered and unacknowledged: %d senders, want 1 (waiting to resend it)", i, got)
		}
		ack, err := m.Reply("edgehub", "OK")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.conn.Send(context.Background(), ack); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the acknowledged message leaves the queue and the sender ends", func() bool {
			return len(c.pending(r.name)) == 0 && senders() == 0
		})
	}
}
