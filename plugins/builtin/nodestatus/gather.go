package nodestatus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// threshold is "below this much available": an absolute amount or a fraction of the total.
type threshold struct {
	setting  string
	text     string
	absolute int64   // bytes or pids, when fraction < 0
	fraction float64 // 0..1, or -1
}

func parseThreshold(setting, v string) (threshold, error) {
	t := threshold{setting: setting, text: strings.TrimSpace(v), fraction: -1}
	if t.text == "" {
		return t, nil // never under pressure
	}
	if p, ok := strings.CutSuffix(t.text, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f < 0 || f > 100 || math.IsNaN(f) {
			return t, fmt.Errorf("%s %q is not a percentage between 0%% and 100%%", setting, v)
		}
		t.fraction = f / 100
		return t, nil
	}
	q, err := parseQuantity(setting, t.text)
	if err != nil {
		return t, err
	}
	t.absolute = q.Value()
	return t, nil
}

// under reports whether available is below the threshold, given the total.
func (t threshold) under(available, total int64) bool {
	if t.fraction >= 0 {
		return float64(available) < t.fraction*float64(total)
	}
	return available < t.absolute
}

// gatherer holds the parsed settings and the CRI connection of one module instance.
type gatherer struct {
	procRoot, etcRoot, storagePath string
	maxPods                        int
	reserved                       map[string]resource.Quantity
	memT, diskT, pidT              threshold
	log                            *slog.Logger
	version                        string // the host's release (sdk.HostVersioner), reported as kedgeVersion
	boot                           time.Time

	cri criClient // nil without criEndpoint

	mu     sync.Mutex
	warned map[string]bool // problems already logged (each once until it clears)
}

func (m *Module) newGatherer() (*gatherer, error) {
	if m.MaxPods < 0 {
		return nil, fmt.Errorf("maxPods %d is negative", m.MaxPods)
	}
	if m.ProcRoot == "" || m.StoragePath == "" {
		return nil, errors.New("procRoot and storagePath must not be empty")
	}
	g := &gatherer{procRoot: m.ProcRoot, etcRoot: m.EtcRoot, storagePath: m.StoragePath, maxPods: m.MaxPods,
		reserved: map[string]resource.Quantity{}, log: slog.Default(), warned: map[string]bool{}}
	for name, v := range map[string]string{"cpu": m.SystemReserved.CPU, "memory": m.SystemReserved.Memory, "ephemeral-storage": m.SystemReserved.EphemeralStorage} {
		q, err := parseQuantity("systemReserved."+name, v)
		if err != nil {
			return nil, err
		}
		g.reserved[name] = q
	}
	var err error
	if g.memT, err = parseThreshold("pressure.memoryAvailable", m.Pressure.MemoryAvailable); err != nil {
		return nil, err
	}
	if g.diskT, err = parseThreshold("pressure.diskAvailable", m.Pressure.DiskAvailable); err != nil {
		return nil, err
	}
	if g.pidT, err = parseThreshold("pressure.pidAvailable", m.Pressure.PIDAvailable); err != nil {
		return nil, err
	}
	if ep := strings.TrimSpace(m.CRIEndpoint); ep != "" {
		if !strings.Contains(ep, "://") {
			ep = "unix://" + ep
		}
		if !strings.HasPrefix(ep, "unix://") {
			return nil, fmt.Errorf("criEndpoint %q: only unix sockets are supported", m.CRIEndpoint)
		}
		if dialCRI == nil {
			return nil, errNoCRI
		}
		cri, err := dialCRI(ep)
		if err != nil {
			return nil, fmt.Errorf("criEndpoint %q: %w", m.CRIEndpoint, err)
		}
		g.cri = cri
	}
	return g, nil
}

func (g *gatherer) close() {
	if g.cri != nil {
		_ = g.cri.Close()
	}
}

// criClient asks a container runtime for its name and version (cri.go: CRI over gRPC).
type criClient interface {
	Version(ctx context.Context) (name, version string, err error)
	Close() error
}

// dialCRI connects to a CRI unix socket endpoint ("unix:///run/containerd/containerd.sock"); nil
// when the build leaves the CRI client out (the tag kedge_nocri: the gateway class, which runs no
// pods, see cmd/modules.yaml), so that k8s.io/cri-api is not linked. cri.go sets it.
var dialCRI func(endpoint string) (criClient, error)

// errNoCRI is the error for criEndpoint in a build without the CRI client.
var errNoCRI = errors.New("criEndpoint is set, but this edgecore has no CRI client (built with the tag kedge_nocri, as the gateway class is): set modules.nodestatus.criEndpoint to \"\" or use a build with the cri feature (the full class)")

// once logs a problem the first time it is seen; clear forgets it once it is gone.
func (g *gatherer) once(key string, msg string, args ...any) {
	g.mu.Lock()
	seen := g.warned[key]
	g.warned[key] = true
	g.mu.Unlock()
	if !seen {
		g.log.Warn(msg, args...)
	}
}

func (g *gatherer) clear(key string) {
	g.mu.Lock()
	delete(g.warned, key)
	g.mu.Unlock()
}

// gather reads everything. MemTotal, the kernel version and the uptime are required (an error);
// anything else that cannot be read is left out of the report and logged once.
func (g *gatherer) gather(ctx context.Context, node string) (Status, error) {
	mem, err := meminfo(g.procRoot + "/meminfo")
	if err != nil {
		return Status{}, err
	}
	kernel, err := os.ReadFile(g.procRoot + "/sys/kernel/osrelease")
	if err != nil {
		return Status{}, fmt.Errorf("read kernel version: %w", err)
	}
	// Boot time is now minus uptime: read each time, it would move by the moments between the two
	// readings and make every report differ from the last. It is read once (a reboot restarts edgecore).
	boot := g.boot
	if boot.IsZero() {
		if boot, err = bootTime(g.procRoot + "/uptime"); err != nil {
			return Status{}, err
		}
		g.boot = boot
	}
	st := Status{
		NodeName: node,
		Capacity: map[string]string{
			"cpu":    strconv.Itoa(runtime.NumCPU()),
			"memory": strconv.FormatUint(mem.total, 10) + "Ki",
			"pods":   strconv.Itoa(g.maxPods),
		},
		KernelVersion: strings.TrimSpace(string(kernel)),
		OS:            runtime.GOOS,
		Architecture:  runtime.GOARCH,
		OSImage:       osImage(g.etcRoot + "/os-release"),
		Addresses:     hostIPs(),
		BootTime:      boot.UTC().Truncate(time.Second),
		MachineID:     g.readID("machine-id", g.etcRoot+"/machine-id"),
		BootID:        g.readID("boot-id", g.procRoot+"/sys/kernel/random/boot_id"),
		Version:       g.version,
	}

	// Memory.
	memTotal := int64(mem.total) * 1024
	if mem.available >= 0 {
		st.Conditions = append(st.Conditions, memoryCondition(mem.available*1024, memTotal, g.memT))
	} else {
		g.once("memavailable", "no MemAvailable in meminfo: MemoryPressure is not reported", "file", g.procRoot+"/meminfo")
	}

	// Disk.
	if fs, err := statfs(g.storagePath); err != nil {
		g.once("statfs", "storagePath's filesystem unreadable: ephemeral-storage and DiskPressure are not reported", "path", g.storagePath, "err", err)
	} else {
		g.clear("statfs")
		st.Capacity["ephemeral-storage"] = strconv.FormatInt(fs.total, 10)
		st.Conditions = append(st.Conditions, diskCondition(fs.available, fs.total, g.diskT))
	}

	// PIDs.
	if used, max, err := pids(g.procRoot); err != nil {
		g.once("pids", "PIDPressure is not reported", "err", err)
	} else {
		g.clear("pids")
		st.Conditions = append(st.Conditions, pidCondition(max-used, max, g.pidT))
	}

	st.Allocatable = allocatable(st.Capacity, g.reserved)
	st.ContainerRuntimeVersion = g.runtimeVersion(ctx)
	st.ReportedAt = time.Now().UTC()
	return st, nil
}

// allocatable is capacity minus the reservations, never below zero.
func allocatable(capacity map[string]string, reserved map[string]resource.Quantity) map[string]string {
	out := make(map[string]string, len(capacity))
	for k, v := range capacity {
		r, ok := reserved[k]
		if !ok || r.IsZero() {
			out[k] = v
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			out[k] = v
			continue
		}
		q.Sub(r)
		if q.Sign() < 0 {
			q = resource.Quantity{Format: q.Format}
		}
		out[k] = q.String()
	}
	return out
}

func condition(typ string, pressure bool, yes, no, msg string) Condition {
	c := Condition{Type: typ, Status: "False", Reason: no, Message: msg}
	if pressure {
		c.Status, c.Reason = "True", yes
	}
	return c
}

// The messages name the threshold and the total, never what is available now: a message that
// changed with every reading would make each report of an idle node a new Node status for the cloud
// to write (a fleet of 10,000 edges at a 10 s interval: 1,000 writes/s). They change only when the
// condition does; the live figures are the edge's own metrics.
// The messages name the threshold and the total, never what is available now: a message that
// changed with every reading would make each report of an idle node a new Node status for the cloud
// to write (a fleet of 10,000 edges at a 10 s interval: 1,000 writes/s). They change only when the
// condition does; the live figures are the edge's own metrics.
func memoryCondition(available, total int64, t threshold) Condition {
	p := t.under(available, total)
	return condition("MemoryPressure", p, "EdgeHasMemoryPressure", "EdgeHasSufficientMemory",
		pressureMessage("memory", p, t, bytes, total))
}

func diskCondition(available, total int64, t threshold) Condition {
	p := t.under(available, total)
	return condition("DiskPressure", p, "EdgeHasDiskPressure", "EdgeHasNoDiskPressure",
		pressureMessage("disk space", p, t, bytes, total))
}

func pidCondition(available, total int64, t threshold) Condition {
	p := t.under(available, total)
	return condition("PIDPressure", p, "EdgeHasPIDPressure", "EdgeHasSufficientPID",
		pressureMessage("PIDs", p, t, func(n int64) string { return strconv.FormatInt(n, 10) }, total))
}

func pressureMessage(what string, pressure bool, t threshold, format func(int64) string, total int64) string {
	if t.text == "" {
		return fmt.Sprintf("no %s pressure threshold is set (%s in all)", what, format(total))
	}
	side := "at or above"
	if pressure {
		side = "below"
	}
	return fmt.Sprintf("edge has %s available %s the pressure threshold (%s of %s)", what, side, t.describe(format), format(total))
}

func (t threshold) describe(abs func(int64) string) string {
	switch {
	case t.text == "":
		return "nothing: no threshold set"
	case t.fraction >= 0:
		return t.text
	default:
		return abs(t.absolute)
	}
}

func bytes(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }

// readID reads a one-line ID file; a missing one is logged once and reported as empty.
func (g *gatherer) readID(what, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		g.once(what, what+" unreadable; not reported", "path", path, "err", err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

// runtimeVersion asks CRI for "<runtime>://<version>"; a failure is logged once and reported as "".
func (g *gatherer) runtimeVersion(ctx context.Context) string {
	if g.cri == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	name, version, err := g.cri.Version(ctx)
	if err != nil || name == "" {
		if err == nil {
			err = errors.New("the runtime gave no name")
		}
		g.once("cri", "container runtime version unavailable; not reported", "err", err)
		return ""
	}
	g.clear("cri")
	return name + "://" + version
}

type memInfo struct {
	total     uint64 // KiB
	available int64  // KiB, -1 when the kernel does not say
}

func meminfo(path string) (memInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return memInfo{}, fmt.Errorf("read memory size: %w", err)
	}
	defer f.Close()
	mi := memInfo{available: -1}
	haveTotal := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || (fields[0] != "MemTotal:" && fields[0] != "MemAvailable:") {
			continue
		}
		kib, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return memInfo{}, fmt.Errorf("%s: %s %q: %w", path, strings.TrimSuffix(fields[0], ":"), fields[1], err)
		}
		if fields[0] == "MemTotal:" {
			mi.total, haveTotal = kib, true
		} else {
			mi.available = int64(kib)
		}
	}
	if !haveTotal {
		return memInfo{}, fmt.Errorf("%s: no MemTotal line", path)
	}
	return mi, nil
}

func bootTime(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("read uptime: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return time.Time{}, fmt.Errorf("%s is empty", path)
	}
	up, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: uptime %q: %w", path, fields[0], err)
	}
	return time.Now().Add(-time.Duration(up * float64(time.Second))).Truncate(time.Second), nil
}

// pids returns the tasks in use (the total of /proc/loadavg's "running/total" field, which counts
// threads as the kernel's PID allocator does) and pid_max.
func pids(procRoot string) (used, max int64, err error) {
	b, err := os.ReadFile(procRoot + "/loadavg")
	if err != nil {
		return 0, 0, fmt.Errorf("read tasks in use: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) < 4 {
		return 0, 0, fmt.Errorf("%s/loadavg: %q has no running/total field", procRoot, strings.TrimSpace(string(b)))
	}
	_, total, ok := strings.Cut(fields[3], "/")
	if used, err = strconv.ParseInt(total, 10, 64); !ok || err != nil {
		return 0, 0, fmt.Errorf("%s/loadavg: tasks %q is not running/total", procRoot, fields[3])
	}
	b, err = os.ReadFile(procRoot + "/sys/kernel/pid_max")
	if err != nil {
		return 0, 0, fmt.Errorf("read pid_max: %w", err)
	}
	if max, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil || max <= 0 {
		return 0, 0, fmt.Errorf("%s/sys/kernel/pid_max: %q is not a positive number", procRoot, strings.TrimSpace(string(b)))
	}
	return min(used, max), max, nil
}

type fsInfo struct{ total, available int64 }

// statfs measures the filesystem holding path, or its nearest existing parent.
func statfs(path string) (fsInfo, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return fsInfo{}, err
	}
	for {
		var s syscall.Statfs_t
		err := syscall.Statfs(p, &s)
		if err == nil {
			return fsInfo{total: int64(s.Blocks) * int64(s.Bsize), available: int64(s.Bavail) * int64(s.Bsize)}, nil
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, syscall.ENOENT) || parent == p {
			return fsInfo{}, fmt.Errorf("statfs %s: %w", p, err)
		}
		p = parent
	}
}
