// Package nodestatus reports the edge node's own facts — capacity, kernel, uptime, readiness — on a
// fixed interval. It is separate from edged so a box that runs no pods still reports its node.
package nodestatus

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
)

// Name is the module's routing address.
const Name = "nodestatus"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "node",
		Doc:      "Reports the node's capacity, kernel and uptime on an interval (works without edged).",
		Requires: []string{"metamanager"},
		Enabled:  true,
		New:      func() sdk.Module { return New() },
	})
}

// Module is the node status reporter; its exported fields are its settings.
type Module struct {
	Interval  time.Duration `yaml:"interval" doc:"How often the node status is reported."`
	Namespace string        `yaml:"namespace" doc:"Namespace of the nodestatus resource (KubeEdge uses default)."`
	ProcRoot  string        `yaml:"procRoot" doc:"Where /proc is mounted (a different path when edgecore runs in a container)."`

	host    sdk.Host
	wg      sync.WaitGroup
	reports prometheus.Counter
	failed  prometheus.Counter
}

var _ sdk.Module = (*Module)(nil)

// New returns a reporter with its defaults.
func New() *Module {
	return &Module{Interval: 10 * time.Second, Namespace: "default", ProcRoot: "/proc"}
}

// Status is the content of a nodestatus message.
type Status struct {
	NodeName      string            `json:"nodeName"`
	Capacity      map[string]string `json:"capacity"`
	KernelVersion string            `json:"kernelVersion"`
	OS            string            `json:"operatingSystem"`
	Architecture  string            `json:"architecture"`
	OSImage       string            `json:"osImage,omitempty"`
	Addresses     []string          `json:"addresses,omitempty"` // the host's non-loopback IPs, IPv4 first
	BootTime      time.Time         `json:"bootTime"`
	ReportedAt    time.Time         `json:"reportedAt"`
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if m.Interval < time.Second {
		return fmt.Errorf("interval %s is below 1s", m.Interval)
	}
	m.host = h
	m.reports = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_nodestatus_reports_total", Help: "Node status reports stored."})
	m.failed = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_nodestatus_failures_total", Help: "Node status reports that could not be gathered or stored."})
	if err := h.Metrics().Register(m.reports); err != nil {
		return err
	}
	if err := h.Metrics().Register(m.failed); err != nil {
		return err
	}
	m.wg.Add(1)
	go m.loop(ctx)
	return nil
}

func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	return nil
}

// Handle has nothing to do: nodestatus only sends. Replies to its sync writes never arrive here.
func (m *Module) Handle(context.Context, sdk.Message) error { return nil }

func (m *Module) loop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	for {
		if err := m.report(ctx); err != nil && ctx.Err() == nil {
			m.failed.Inc()
			m.host.Logger().Warn("node status report failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Module) report(ctx context.Context) error {
	st, err := Gather(m.ProcRoot, m.host.NodeName())
	if err != nil {
		return err
	}
	res := message.Resource{Namespace: m.Namespace, Type: "nodestatus", Name: m.host.NodeName()}
	msg, err := message.New(Name, "meta", message.OpUpdate, res.Edge()).WithContent(st)
	if err != nil {
		return err
	}
	// Sync, so a report counts only once metamanager has it on disk.
	reply, err := m.host.SendSync(ctx, "metamanager", msg, 10*time.Second)
	if err != nil {
		return err
	}
	if reply.Route.Operation == message.OpError {
		return fmt.Errorf("metamanager refused the report: %s", reply.Content)
	}
	m.reports.Inc()
	return nil
}

// Gather reads the node's facts from procRoot.
func Gather(procRoot, node string) (Status, error) {
	mem, err := memTotal(procRoot + "/meminfo")
	if err != nil {
		return Status{}, err
	}
	kernel, err := os.ReadFile(procRoot + "/sys/kernel/osrelease")
	if err != nil {
		return Status{}, fmt.Errorf("read kernel version: %w", err)
	}
	boot, err := bootTime(procRoot + "/uptime")
	if err != nil {
		return Status{}, err
	}
	return Status{
		NodeName: node,
		Capacity: map[string]string{
			"cpu":    strconv.Itoa(runtime.NumCPU()),
			"memory": strconv.FormatUint(mem, 10) + "Ki",
		},
		KernelVersion: strings.TrimSpace(string(kernel)),
		OS:            runtime.GOOS,
		Architecture:  runtime.GOARCH,
		OSImage:       osImage("/etc/os-release"),
		Addresses:     hostIPs(),
		BootTime:      boot.UTC().Truncate(time.Second),
		ReportedAt:    time.Now().UTC(),
	}, nil
}

// osImage is PRETTY_NAME from os-release ("Debian GNU/Linux 12 (bookworm)"), or "" if unreadable.
func osImage(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

// hostIPs lists the host's global unicast addresses, IPv4 before IPv6.
func hostIPs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var v4, v6 []string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			v4 = append(v4, n.IP.String())
		} else {
			v6 = append(v6, n.IP.String())
		}
	}
	return append(v4, v6...)
}

func memTotal(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemTotal %q: %w", path, fields[1], err)
			}
			return kib, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal line", path)
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
	return time.Now().Add(-time.Duration(up * float64(time.Second))), nil
}
