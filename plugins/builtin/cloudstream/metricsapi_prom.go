package cloudstream

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// point is one CPU and memory reading: cumulative core-seconds and working-set bytes, each with the
// time the runtime took it (zero: not reported).
type point struct {
	CPU    float64
	CPUAt  time.Time
	Mem    uint64
	MemAt  time.Time
	hasCPU bool
	hasMem bool
}

// containerKey names a container on a node.
type containerKey struct{ Namespace, Pod, Container string }

// scrape is what one node reported at once.
type scrape struct {
	Node       point
	Containers map[containerKey]point
	ScrapeErr  bool
}

// parseResourceMetrics reads the kubelet's /metrics/resource Prometheus text. Only the node_,
// container_ CPU/memory series and scrape_error are taken; other families are skipped. A malformed
// line is an error naming its line number.
func parseResourceMetrics(r io.Reader, fallback time.Time) (*scrape, error) {
	s := &scrape{Containers: map[containerKey]point{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, at, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", n, truncate(line, 120), err)
		}
		if at.IsZero() {
			at = fallback
		}
		switch name {
		case "node_cpu_usage_seconds_total":
			s.Node.CPU, s.Node.CPUAt, s.Node.hasCPU = value, at, true
		case "node_memory_working_set_bytes":
			s.Node.Mem, s.Node.MemAt, s.Node.hasMem = toBytes(value), at, true
		case "container_cpu_usage_seconds_total", "container_memory_working_set_bytes":
			k := containerKey{Namespace: labels["namespace"], Pod: labels["pod"], Container: labels["container"]}
			if k.Namespace == "" || k.Pod == "" || k.Container == "" {
				return nil, fmt.Errorf("metrics line %d: %s needs the labels namespace, pod and container", n, name)
			}
			p := s.Containers[k]
			if name == "container_cpu_usage_seconds_total" {
				p.CPU, p.CPUAt, p.hasCPU = value, at, true
			} else {
				p.Mem, p.MemAt, p.hasMem = toBytes(value), at, true
			}
			s.Containers[k] = p
		case "scrape_error":
			s.ScrapeErr = value != 0
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	return s, nil
}

func toBytes(v float64) uint64 {
	if v <= 0 || math.IsNaN(v) {
		return 0
	}
	return uint64(v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// parseSample splits `name{l="v",...} value [timestamp_ms]`.
func parseSample(line string) (name string, labels map[string]string, value float64, at time.Time, err error) {
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", nil, 0, time.Time{}, fmt.Errorf("no value after the metric name")
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		labels, rest, err = parseLabels(rest[1:])
		if err != nil {
			return "", nil, 0, time.Time{}, err
		}
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return "", nil, 0, time.Time{}, fmt.Errorf("want a value and an optional timestamp, got %d fields", len(f))
	}
	if value, err = strconv.ParseFloat(f[0], 64); err != nil {
		return "", nil, 0, time.Time{}, fmt.Errorf("value %q is not a number", f[0])
	}
	if len(f) == 2 {
		ms, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return "", nil, 0, time.Time{}, fmt.Errorf("timestamp %q is not milliseconds", f[1])
		}
		at = time.UnixMilli(ms)
	}
	return name, labels, value, at, nil
}

// parseLabels reads `l="v",...}` and returns what follows the closing brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return nil, "", fmt.Errorf("unclosed label set")
		}
		if s[0] == '}' {
			return labels, s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, "", fmt.Errorf("label without '='")
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t")
		if s == "" || s[0] != '"' {
			return nil, "", fmt.Errorf("label %s: value not quoted", key)
		}
		var b strings.Builder
		j, closed := 1, false
		for j < len(s) {
			c := s[j]
			if c == '\\' && j+1 < len(s) {
				switch s[j+1] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[j+1])
				}
				j += 2
				continue
			}
			if c == '"' {
				closed = true
				break
			}
			b.WriteByte(c)
			j++
		}
		if !closed {
			return nil, "", fmt.Errorf("label %s: unterminated value", key)
		}
		labels[key] = b.String()
		s = s[j+1:]
	}
}
