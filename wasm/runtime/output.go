package wasmruntime

import (
	"bytes"
	"strings"
)

// head keeps the start of what a guest wrote to stderr during the current call: a Go guest says
// why it crashed there ("fatal error: out of memory", "panic: ...") before its stack dump, and the
// error for the failed call quotes it. Only the goroutine calling into the guest writes or reads it.
type head struct {
	buf []byte
}

const headSize = 1024

func (h *head) Write(p []byte) (int, error) {
	if room := headSize - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *head) reset() { h.buf = h.buf[:0] }

// summary is ": <first lines>" or "" when the guest wrote nothing.
func (h *head) summary() string {
	s := strings.TrimSpace(string(h.buf))
	if s == "" {
		return ""
	}
	lines := strings.SplitN(s, "\n", 4)
	if len(lines) > 3 {
		lines = lines[:3]
	}
	return ": " + strings.Join(lines, " | ")
}

// lineLog sends what a guest prints on stdout to the host log, a line at a time, when the manifest
// grants log; otherwise it is dropped and counted as a denial.
type lineLog struct {
	m       *Module
	pending []byte
}

const maxLine = 1024

func (w *lineLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.pending = append(w.pending, p...)
			if len(w.pending) > maxLine {
				w.emit()
			}
			break
		}
		w.pending = append(w.pending, p[:i]...)
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineLog) emit() {
	line := w.pending
	if len(line) > maxLine {
		line = line[:maxLine]
	}
	w.pending = w.pending[:0]
	if !w.m.manifest.Capabilities.Log {
		w.m.deny("log", "stdout: logging is not granted by the manifest (capabilities.log)")
		return
	}
	w.m.log.Info(string(line), "from", "guest stdout")
}
