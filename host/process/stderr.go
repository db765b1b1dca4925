package process

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// tailLines is how many of a plugin's last output lines are kept for error messages.
const tailLines = 8

// lineLog writes a plugin's stdout or stderr to the module's log, one record per line, and keeps the
// last lines so a failed start or a crash can quote them.
type lineLog struct {
	log    *slog.Logger
	stream string // "stderr" or "stdout"

	mu      sync.Mutex
	partial []byte
	last    []string
}

func (w *lineLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.partial[:i]), "\r")
		w.partial = w.partial[i+1:]
		if line == "" {
			continue
		}
		w.log.Warn("plugin "+w.stream, "line", line)
		if len(w.last) == tailLines {
			w.last = w.last[1:]
		}
		w.last = append(w.last, line)
	}
	if len(w.partial) > 64<<10 { // a "line" this long is not text; log it rather than grow
		w.log.Warn("plugin "+w.stream, "line", string(w.partial))
		w.partial = nil
	}
	return len(p), nil
}

// tail returns the last lines written.
func (w *lineLog) tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.last...)
}

// tailNote is "; its stderr ended with: ..." or "" if it wrote nothing.
func (w *lineLog) tailNote() string {
	t := w.tail()
	if len(t) == 0 {
		return ""
	}
	return "; its " + w.stream + " ended with: " + strings.Join(t, " | ")
}
