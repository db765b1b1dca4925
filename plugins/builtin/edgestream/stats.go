package edgestream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
)

// containerSample is one container's CPU and memory figures from the runtime.
type containerSample struct {
	Namespace, Pod, Container string
	CPUSeconds                float64 // cumulative core-seconds
	CPUTime                   time.Time
	MemoryWorkingSet          uint64 // bytes
	MemoryTime                time.Time
}

// statsSource is what the stats session needs from the container runtime; criRuntime implements it.
type statsSource interface {
	// containerStats returns the figures of the running containers edged made for this node.
	containerStats(ctx context.Context) ([]containerSample, error)
}

// procRoot is where /proc is read from (tests point it at a folder of their own).
var procRoot = "/proc"

func (r *criRuntime) containerStats(ctx context.Context) ([]containerSample, error) {
	resp, err := r.rt.ListContainerStats(ctx, &criv1.ListContainerStatsRequest{Filter: &criv1.ContainerStatsFilter{
		LabelSelector: map[string]string{labelManaged: managedValue, labelNode: r.node}}})
	if err != nil {
		return nil, fmt.Errorf("CRI ListContainerStats: %w", err)
	}
	out := make([]containerSample, 0, len(resp.Stats))
	for _, st := range resp.Stats {
		a := st.GetAttributes()
		if a == nil {
			continue
		}
		// The runtime echoes the container's labels; a filter it ignored is applied again here.
		if a.Labels[labelManaged] != managedValue || a.Labels[labelNode] != r.node {
			continue
		}
		s := containerSample{Namespace: a.Labels[labelPodNamespace], Pod: a.Labels[labelPodName], Container: a.Labels[labelContainerName]}
		if s.Container == "" && a.Metadata != nil {
			s.Container = a.Metadata.Name
		}
		if s.Namespace == "" || s.Pod == "" || s.Container == "" {
			continue
		}
		if c := st.GetCpu(); c != nil && c.UsageCoreNanoSeconds != nil {
			s.CPUSeconds, s.CPUTime = float64(c.UsageCoreNanoSeconds.Value)/1e9, time.Unix(0, c.Timestamp)
		}
		if m := st.GetMemory(); m != nil && m.WorkingSetBytes != nil {
			s.MemoryWorkingSet, s.MemoryTime = m.WorkingSetBytes.Value, time.Unix(0, m.Timestamp)
		}
		out = append(out, s)
	}
	return out, nil
}

// nodeSample is the node's own figures.
type nodeSample struct {
	CPUSeconds       float64 // cumulative busy core-seconds (all but idle and iowait)
	MemoryWorkingSet uint64  // MemTotal - MemAvailable, bytes
	Time             time.Time
}

// userHZ is the unit of /proc/stat (USER_HZ is 100 on every Linux architecture Kedge runs on).
const userHZ = 100

// readNode reads the node's CPU time from /proc/stat and its memory from /proc/meminfo.
func readNode(root string, now time.Time) (nodeSample, error) {
	s := nodeSample{Time: now}
	f, err := os.Open(filepath.Join(root, "stat"))
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[0] != "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal (guest times are already in user and nice)
		var busy uint64
		for i, v := range fields[1:] {
			if i >= 8 {
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return s, fmt.Errorf("%s/stat: cpu field %d %q: %w", root, i+1, v, err)
			}
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		s.CPUSeconds, found = float64(busy)/userHZ, true
		break
	}
	if !found {
		return s, fmt.Errorf("%s/stat has no cpu line", root)
	}
	mem, err := os.ReadFile(filepath.Join(root, "meminfo"))
	if err != nil {
		return s, err
	}
	var total, avail uint64
	var haveTotal, haveAvail bool
	for _, line := range strings.Split(string(mem), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total, haveTotal = n*1024, true
		case "MemAvailable":
			avail, haveAvail = n*1024, true
		}
	}
	if !haveTotal || !haveAvail {
		return s, fmt.Errorf("%s/meminfo lacks MemTotal or MemAvailable", root)
	}
	if avail < total {
		s.MemoryWorkingSet = total - avail
	}
	return s, nil
}

// writeResourceMetrics writes the kubelet's /metrics/resource text: node, pod and container CPU
// (cumulative core-seconds) and memory working set, each with its millisecond timestamp, and
// scrape_error 1 when a part could not be read.
func writeResourceMetrics(w io.Writer, node *nodeSample, containers []containerSample, scrapeErr bool) error {
	bw := bufio.NewWriter(w)
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	family := func(name, typ, help string) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	sort.Slice(containers, func(i, j int) bool {
		a, b := containers[i], containers[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Pod != b.Pod {
			return a.Pod < b.Pod
		}
		return a.Container < b.Container
	})
	family("container_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the container in core-seconds")
	for _, c := range containers {
		if !c.CPUTime.IsZero() {
			fmt.Fprintf(bw, "container_cpu_usage_seconds_total{container=%q,namespace=%q,pod=%q} %s %d\n",
				c.Container, c.Namespace, c.Pod, fnum(c.CPUSeconds), ms(c.CPUTime))
		}
	}
	family("container_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the container in bytes")
	for _, c := range containers {
		if !c.MemoryTime.IsZero() {
			fmt.Fprintf(bw, "container_memory_working_set_bytes{container=%q,namespace=%q,pod=%q} %d %d\n",
				c.Container, c.Namespace, c.Pod, c.MemoryWorkingSet, ms(c.MemoryTime))
		}
	}
	if node != nil {
		family("node_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds")
		fmt.Fprintf(bw, "node_cpu_usage_seconds_total %s %d\n", fnum(node.CPUSeconds), ms(node.Time))
		family("node_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the node in bytes")
		fmt.Fprintf(bw, "node_memory_working_set_bytes %d %d\n", node.MemoryWorkingSet, ms(node.Time))
	}
	// Pod figures are the sums of their containers' (the newest timestamp among them).
	type podSum struct {
		ns, pod          string
		cpu              float64
		mem              uint64
		cpuT, memT       time.Time
		hasCPU, hasMemry bool
	}
	var pods []*podSum
	byKey := map[string]*podSum{}
	for _, c := range containers {
		k := c.Namespace + "/" + c.Pod
		p := byKey[k]
		if p == nil {
			p = &podSum{ns: c.Namespace, pod: c.Pod}
			byKey[k] = p
			pods = append(pods, p)
		}
		if !c.CPUTime.IsZero() {
			p.cpu += c.CPUSeconds
			p.hasCPU = true
			if c.CPUTime.After(p.cpuT) {
				p.cpuT = c.CPUTime
			}
		}
		if !c.MemoryTime.IsZero() {
			p.mem += c.MemoryWorkingSet
			p.hasMemry = true
			if c.MemoryTime.After(p.memT) {
				p.memT = c.MemoryTime
			}
		}
	}
	family("pod_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds")
	for _, p := range pods {
		if p.hasCPU {
			fmt.Fprintf(bw, "pod_cpu_usage_seconds_total{namespace=%q,pod=%q} %s %d\n", p.ns, p.pod, fnum(p.cpu), ms(p.cpuT))
		}
	}
	family("pod_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the pod in bytes")
	for _, p := range pods {
		if p.hasMemry {
			fmt.Fprintf(bw, "pod_memory_working_set_bytes{namespace=%q,pod=%q} %d %d\n", p.ns, p.pod, p.mem, ms(p.memT))
		}
	}
	family("scrape_error", "gauge", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise")
	e := 0
	if scrapeErr {
		e = 1
	}
	fmt.Fprintf(bw, "scrape_error %d\n", e)
	return bw.Flush()
}

func fnum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// serveStats answers a stats session: 200, then this node's resource metrics, then the end of the
// connection. A part that cannot be read is left out and scrape_error is 1.
func (m *Module) serveStats(ctx context.Context, conn net.Conn) error {
	src, ok := m.rt.(statsSource)
	if !ok {
		return refuse(http.StatusNotImplemented, "node %s: this runtime gives no container stats", m.host.NodeName())
	}
	scrapeErr := false
	node, err := readNode(procRoot, time.Now())
	np := &node
	if err != nil {
		scrapeErr, np = true, nil
		m.host.Logger().Warn("stats: node figures not read", "err", err)
	}
	cctx, cancel := context.WithTimeout(ctx, m.DialTimeout)
	containers, err := src.containerStats(cctx)
	cancel()
	if err != nil {
		scrapeErr, containers = true, nil
		m.host.Logger().Warn("stats: container figures not read", "err", err)
	}
	if err := wire.WriteLine(conn, wire.Status{Code: http.StatusOK}); err != nil {
		return err
	}
	return writeResourceMetrics(conn, np, containers, scrapeErr)
}
