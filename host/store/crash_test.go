package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The child is this test binary re-executed; these variables tell it where to write and what to call things.
const (
	crashDBEnv    = "KEDGE_STORE_CRASH_DB"
	crashRoundEnv = "KEDGE_STORE_CRASH_ROUND"
)

// TestCrashWriterChild is the child side of TestCrashAcknowledgedWritesSurviveSIGKILL: it writes
// until killed, printing each write after the store acknowledged it.
func TestCrashWriterChild(t *testing.T) {
	path := os.Getenv(crashDBEnv)
	if path == "" {
		t.Skip("child of TestCrashAcknowledgedWritesSurviveSIGKILL; runs only when " + crashDBEnv + " is set")
	}
	round := os.Getenv(crashRoundEnv)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	objs, q := db.Objects("meta"), db.Outbox()
	deadline := time.Now().Add(time.Minute) // never outlive a parent that died without killing us
	for i := 0; time.Now().Before(deadline); i++ {
		name := fmt.Sprintf("r%s-%d", round, i)
		switch i % 3 {
		case 0:
			if _, err := objs.Put(ctx, Object{Key: Key{Type: "pod", Namespace: "ns", Name: name}, ResourceVersion: uint64(i + 1), Value: []byte(name)}); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("obj %s %d\n", name, i+1)
		case 1:
			batch := make([]Object, 4)
			for j := range batch {
				batch[j] = Object{Key: Key{Type: "pod", Namespace: "batch", Name: fmt.Sprintf("%s-%d", name, j)}, ResourceVersion: uint64(i + 1), Value: []byte(name)}
			}
			if _, err := objs.PutBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			for _, o := range batch {
				fmt.Printf("batch %s %d\n", o.Name, i+1)
			}
		case 2:
			seq, err := q.Enqueue(ctx, []byte(name))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("seq %d %s\n", seq, name)
		}
	}
}

// Every write acknowledged before a SIGKILL must be there after reopening, in an intact database.
func TestCrashAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns writer processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	ctx := context.Background()
	for round := range 4 {
		killAfter := 300 + 100*round // vary the point of death
		acks := runCrashChild(t, path, round, killAfter)
		if len(acks) < killAfter {
			t.Fatalf("round %d: only %d acknowledged writes before the child ended, want >= %d", round, len(acks), killAfter)
		}

		db, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		if err := db.IntegrityCheck(ctx); err != nil {
			db.Close()
			t.Fatalf("round %d: %v", round, err)
		}
		entries, err := db.Outbox().Peek(ctx, 1<<30)
		if err != nil {
			db.Close()
			t.Fatal(err)
		}
		queued := map[int64]string{}
		for _, e := range entries {
			queued[e.Seq] = string(e.Payload)
		}
		objs := db.Objects("meta")
		for _, ack := range acks {
			f := strings.Fields(ack)
			switch f[0] {
			case "obj", "batch":
				ns := map[string]string{"obj": "ns", "batch": "batch"}[f[0]]
				o, err := objs.Get(ctx, Key{Type: "pod", Namespace: ns, Name: f[1]})
				if err != nil || strconv.FormatUint(o.ResourceVersion, 10) != f[2] {
					t.Errorf("round %d: acknowledged %q lost: got %+v, %v", round, ack, o, err)
				}
			case "seq":
				seq, _ := strconv.ParseInt(f[1], 10, 64)
				if got, ok := queued[seq]; !ok || got != f[2] {
					t.Errorf("round %d: acknowledged %q lost: outbox has %q, %v", round, ack, got, ok)
				}
			}
		}
		db.Close()
		t.Logf("round %d: %d acknowledged writes, all present; %d outbox entries", round, len(acks), len(entries))
		if t.Failed() {
			return
		}
	}
}

// runCrashChild starts the writer, SIGKILLs it once killAfter writes were acknowledged, and
// returns every acknowledgement line it printed in full before dying.
func runCrashChild(t *testing.T, path string, round, killAfter int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashWriterChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDBEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}

	var acks []string
	r := bufio.NewReader(out)
	killed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil { // EOF: the child is gone; a line without '\n' was cut by the kill and is no ack
			if !errors.Is(err, io.EOF) {
				t.Errorf("read child output: %v", err)
			}
			break
		}
		if f := strings.Fields(line); len(f) == 3 && (f[0] == "obj" || f[0] == "batch" || f[0] == "seq") {
			acks = append(acks, line)
		}
		if !killed && len(acks) >= killAfter {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred cleanup, no Close
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("round %d: child ended before being killed (%v); stderr:\n%s", round, err, stderr.String())
	}
	return acks
}
