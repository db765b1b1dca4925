package edgestream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
)

// logOptions are the kubelet's /containerLogs query parameters that edgestream honours.
type logOptions struct {
	follow, previous, timestamps bool
	tailLines                    int64 // -1: all
	limitBytes                   int64 // 0: no limit
	since                        time.Time
}

func parseLogOptions(raw string) (logOptions, error) {
	o := logOptions{tailLines: -1}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return o, refuse(http.StatusBadRequest, "log query %q: %v", raw, err)
	}
	o.follow, o.previous, o.timestamps = flag(q, "follow"), flag(q, "previous"), flag(q, "timestamps")
	num := func(name string) (int64, error) {
		v := q.Get(name)
		if v == "" {
			return -1, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, refuse(http.StatusBadRequest, "log query: %s=%q is not a non-negative integer", name, v)
		}
		return n, nil
	}
	if o.tailLines, err = num("tailLines"); err != nil {
		return o, err
	}
	if o.limitBytes, err = num("limitBytes"); err != nil {
		return o, err
	}
	if o.limitBytes < 0 {
		o.limitBytes = 0
	}
	secs, err := num("sinceSeconds")
	if err != nil {
		return o, err
	}
	if secs > 0 {
		o.since = time.Now().Add(-time.Duration(secs) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		if o.since, err = time.Parse(time.RFC3339, v); err != nil {
			return o, refuse(http.StatusBadRequest, "log query: sinceTime=%q is not RFC 3339", v)
		}
	}
	return o, nil
}

// criLine is one line of a CRI log file: "<RFC3339Nano> <stdout|stderr> <F|P> <text>".
type criLine struct {
	ts      []byte
	partial bool
	text    []byte // without the line's trailing newline
}

func parseCRILine(b []byte) (criLine, bool) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	ts, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok {
		return criLine{}, false
	}
	_, rest, ok = bytes.Cut(rest, []byte(" ")) // stream
	if !ok {
		return criLine{}, false
	}
	tag, text, _ := bytes.Cut(rest, []byte(" "))
	return criLine{ts: ts, partial: bytes.HasPrefix(tag, []byte("P")), text: text}, true
}

// format renders a line as the kubelet does: the text, a newline unless partial, the timestamp
// in front when asked for.
func (o logOptions) format(l criLine) []byte {
	var out []byte
	if o.timestamps {
		out = append(append(out, l.ts...), ' ')
	}
	out = append(out, l.text...)
	if !l.partial {
		out = append(out, '\n')
	}
	return out
}

func (o logOptions) keep(l criLine) bool {
	if o.since.IsZero() {
		return true
	}
	t, err := time.Parse(time.RFC3339Nano, string(l.ts))
	return err != nil || !t.Before(o.since)
}

// serveLogs streams a container's CRI log file, formatted, following it when asked until the
// container stops or the cloud closes the session.
func (m *Module) serveLogs(ctx context.Context, conn net.Conn, rd *bufio.Reader, req wire.Request) error {
	o, err := parseLogOptions(req.Query)
	if err != nil {
		return err
	}
	id, err := m.rt.find(ctx, req.Namespace, req.Pod, req.Container, o.previous)
	if err != nil {
		return err
	}
	path, running, err := m.rt.logPath(ctx, id)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return refuse(http.StatusNotFound, "log of %s/%s/%s: %v", req.Namespace, req.Pod, req.Container, err)
	}
	defer f.Close()
	if err := wire.WriteLine(conn, wire.Status{Code: http.StatusOK}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the cloud sends nothing more: a read ending means it closed the session
		_, _ = io.Copy(io.Discard, rd)
		cancel()
	}()
	out := bufio.NewWriter(conn)
	written := int64(0)
	emit := func(l criLine) error {
		if !o.keep(l) {
			return nil
		}
		b := o.format(l)
		if o.limitBytes > 0 && written+int64(len(b)) > o.limitBytes {
			b = b[:o.limitBytes-written]
		}
		written += int64(len(b))
		if _, err := out.Write(b); err != nil {
			return err
		}
		if o.limitBytes > 0 && written >= o.limitBytes {
			return errLimit
		}
		return nil
	}
	src := bufio.NewReader(f)
	var pendingLine []byte // a line the runtime has not finished writing yet
	readLine := func() ([]byte, bool) {
		b, err := src.ReadBytes('\n')
		pendingLine = append(pendingLine, b...)
		if err != nil { // no complete line yet
			return nil, false
		}
		line := pendingLine
		pendingLine = nil
		return line, true
	}
	if o.tailLines >= 0 {
		ring := make([][]byte, 0, min(o.tailLines, 4096))
		for {
			line, ok := readLine()
			if !ok {
				break
			}
			if o.tailLines == 0 {
				continue
			}
			if int64(len(ring)) == o.tailLines {
				ring = ring[1:]
			}
			ring = append(ring, line)
		}
		for _, line := range ring {
			if l, ok := parseCRILine(line); ok {
				if err := emit(l); err != nil {
					return finish(out, err)
				}
			}
		}
	}
	polls := 0
	for {
		for {
			line, ok := readLine()
			if !ok {
				break
			}
			if l, ok := parseCRILine(line); ok {
				if err := emit(l); err != nil {
					return finish(out, err)
				}
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
		if !o.follow {
			return nil
		}
		if polls++; polls%5 == 0 || !running {
			if _, running, err = m.rt.logPath(ctx, id); err != nil || !running {
				// one last read: what the container wrote before it stopped
				for {
					line, ok := readLine()
					if !ok {
						break
					}
					if l, ok := parseCRILine(line); ok {
						if err := emit(l); err != nil {
							return finish(out, err)
						}
					}
				}
				return out.Flush()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(m.LogPoll):
		}
	}
}

var errLimit = errors.New("limitBytes reached")

func finish(out *bufio.Writer, err error) error {
	if errors.Is(err, errLimit) {
		return out.Flush()
	}
	return err
}
