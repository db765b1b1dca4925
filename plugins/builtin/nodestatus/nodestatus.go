// Package nodestatus reports the edge node's own facts — capacity and allocatable, pressure
// conditions, kernel, OS, IDs, runtime version, addresses — on a fixed interval. It is separate from
// edged so a box that runs no pods still reports its node.
package nodestatus

import (
	"context"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address.
const Name = "nodestatus"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "hubevents", // edgehub tells this group when the link comes up: a report goes at once
		Doc:      "Reports the node's capacity, allocatable, pressure conditions, kernel, OS and runtime version on an interval (works without edged).",
		Requires: []string{sdk.DefaultMetaManager},
		Enabled:  true,
		New:      func() sdk.Module { return New() },
	})
}

// Module is the node status reporter; its exported fields are its settings.
type Module struct {
	Interval time.Duration `yaml:"interval" doc:"How often the node status is gathered; a report that differs from the last one sent goes at once."`
	// UnchangedInterval is the kubelet's nodeStatusReportFrequency for an edge: the cloud renews the
	// node's Lease from its link, so an idle node need not repeat itself every interval.
	UnchangedInterval time.Duration `yaml:"unchangedInterval" doc:"A report that repeats the last one sent (all but its time) is sent only this often: an idle node then costs its link, its store and the cloud one report a minute instead of six. 0 (or anything up to interval) sends every report. The cloud renews the node's Lease from its connection, not from reports."`
	Namespace         string        `yaml:"namespace" doc:"Namespace of the nodestatus resource (KubeEdge uses default)."`
	ProcRoot          string        `yaml:"procRoot" doc:"Where /proc is mounted (a different path when edgecore runs in a container)."`
	EtcRoot           string        `yaml:"etcRoot" doc:"Where the host's /etc is (os-release, machine-id)."`
	MaxPods           int           `yaml:"maxPods" doc:"The node's pods capacity (the kubelet's default is 110)."`
	StoragePath       string        `yaml:"storagePath" doc:"A path on the filesystem whose size is ephemeral-storage and whose free space decides DiskPressure (the nearest existing parent is used)."`
	SystemReserved    Reserved      `yaml:"systemReserved" doc:"Resources kept for the system: allocatable = capacity - systemReserved."`
	Pressure          Thresholds    `yaml:"pressure" doc:"A condition is True when what is available falls below its threshold: a quantity (100Mi) or a percentage of the total (10%)."`
	CRIEndpoint       string        `yaml:"criEndpoint" doc:"CRI socket (unix:///run/containerd/containerd.sock or a bare path) asked for the runtime version; empty reports none."`
	MetaManager       string        `yaml:"metaManager" doc:"Module that stores the report and carries it to the cloud."`

	host      sdk.Host
	wg        sync.WaitGroup
	reports   prometheus.Counter
	failed    prometheus.Counter
	unchanged prometheus.Counter
	gatherer  *gatherer
	linkUp    chan struct{}
	last      Status    // the last report sent, its time zeroed
	lastSent  time.Time // when it was sent; zero: none yet
}

// Reserved is what systemReserved keeps back from allocatable.
type Reserved struct {
	CPU              string `yaml:"cpu" doc:"CPU kept for the system, e.g. 100m."`
	Memory           string `yaml:"memory" doc:"Memory kept for the system, e.g. 256Mi."`
	EphemeralStorage string `yaml:"ephemeral-storage" doc:"Disk kept for the system, e.g. 1Gi."`
}

// Thresholds decide the pressure conditions.
type Thresholds struct {
	MemoryAvailable string `yaml:"memoryAvailable" doc:"MemoryPressure when MemAvailable (/proc/meminfo) is below this."`
	DiskAvailable   string `yaml:"diskAvailable" doc:"DiskPressure when the free space of storagePath's filesystem is below this."`
	PIDAvailable    string `yaml:"pidAvailable" doc:"PIDPressure when pid_max minus the tasks in use is below this."`
}

var _ sdk.Module = (*Module)(nil)

// New returns a reporter with its defaults.
func New() *Module {
	return &Module{Interval: 10 * time.Second, UnchangedInterval: time.Minute, Namespace: "default", ProcRoot: "/proc", EtcRoot: "/etc",
		MaxPods: 110, StoragePath: "/var/lib/kedge", MetaManager: sdk.DefaultMetaManager,
		Pressure: Thresholds{MemoryAvailable: "100Mi", DiskAvailable: "10%", PIDAvailable: "5%"}}
}

// Status is the content of a nodestatus message. Fields are only ever added, so an older cloud reads
// a newer edge's report and the other way round.
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

	Allocatable             map[string]string `json:"allocatable,omitempty"`
	Conditions              []Condition       `json:"conditions,omitempty"` // MemoryPressure, DiskPressure, PIDPressure
	MachineID               string            `json:"machineID,omitempty"`
	BootID                  string            `json:"bootID,omitempty"`
	ContainerRuntimeVersion string            `json:"containerRuntimeVersion,omitempty"` // e.g. containerd://1.6.20
	Version                 string            `json:"kedgeVersion,omitempty"`            // edgecore's version
}

// Condition is one node condition as the edge sees it; the cloud keeps the transition times.
type Condition struct {
	Type    string `json:"type"`   // MemoryPressure, DiskPressure, PIDPressure
	Status  string `json:"status"` // True or False
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	g, err := m.newGatherer()
	if err != nil {
		return err
	}
	m.gatherer = g
	m.host = h
	m.linkUp = make(chan struct{}, 1)
	if v, ok := h.(sdk.HostVersioner); ok {
		g.version = v.HostVersion()
	}
	m.reports = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_nodestatus_reports_total", Help: "Node status reports stored."})
	m.failed = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_nodestatus_failures_total", Help: "Node status reports that could not be gathered or stored."})
	if err := h.Metrics().Register(m.reports); err != nil {
		g.close()
		return err
	}
	m.unchanged = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_nodestatus_unchanged_total", Help: "Node status reports not sent: they repeated the last one, sent less than unchangedInterval ago."})
	for _, c := range []prometheus.Collector{m.failed, m.unchanged} {
		if err := h.Metrics().Register(c); err != nil {
			g.close()
			return err
		}
	}
	g.log = h.Logger()
	m.wg.Add(1)
	go m.loop(ctx)
	return nil
}

func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	if m.gatherer != nil {
		m.gatherer.close()
	}
	return nil
}

// Handle takes edgehub's link events: when the link comes up, a report goes at once, changed or not
// (a KubeEdge cloud registers the Node from it; Kedge's cloud reads the node's state from it after a
// long absence). Replies to its sync writes never arrive here.
func (m *Module) Handle(_ context.Context, msg sdk.Message) error {
	if msg.Route.Operation == message.OpConnected {
		select {
		case m.linkUp <- struct{}{}:
		default: // one is pending already
		}
	}
	return nil
}

func (m *Module) loop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	force := true
	for {
		if err := m.report(ctx, force); err != nil && ctx.Err() == nil {
			m.failed.Inc()
			m.host.Logger().Warn("node status report failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			force = false
		case <-m.linkUp:
			force = true
		}
	}
}

// report gathers the node's status and sends it unless it repeats the last one sent less than
// unchangedInterval ago (force: send anyway).
func (m *Module) report(ctx context.Context, force bool) error {
	st, err := m.gatherer.gather(ctx, m.host.NodeName())
	if err != nil {
		return err
	}
	same := st
	same.ReportedAt = time.Time{}
	now := time.Now()
	if !force && m.UnchangedInterval > 0 && !m.lastSent.IsZero() && now.Sub(m.lastSent) < m.UnchangedInterval && reflect.DeepEqual(same, m.last) {
		m.unchanged.Inc()
		return nil
	}
	res := message.Resource{Namespace: m.Namespace, Type: "nodestatus", Name: m.host.NodeName()}
	msg, err := message.New(Name, "meta", message.OpUpdate, res.Edge()).WithContent(st)
	if err != nil {
		return err
	}
	// Sync, so a report counts only once metamanager has it on disk.
	reply, err := m.host.SendSync(ctx, m.MetaManager, msg, 10*time.Second)
	if err != nil {
		return err
	}
	if reply.Route.Operation == message.OpError {
		return fmt.Errorf("%s refused the report: %s", m.MetaManager, reply.Content)
	}
	m.reports.Inc()
	m.last, m.lastSent = same, now
	return nil
}

// Gather reads the node's facts from procRoot with every other setting at its default (no runtime).
func Gather(procRoot, node string) (Status, error) {
	m := New()
	m.ProcRoot = procRoot
	return m.Gather(context.Background(), node)
}

// Gather reads the node's facts with m's settings (used by tests and tools; the module runs its own).
func (m *Module) Gather(ctx context.Context, node string) (Status, error) {
	g, err := m.newGatherer()
	if err != nil {
		return Status{}, err
	}
	defer g.close()
	return g.gather(ctx, node)
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

// parseQuantity parses a setting that must be a non-negative quantity (empty = zero).
func parseQuantity(setting, v string) (resource.Quantity, error) {
	if strings.TrimSpace(v) == "" {
		return resource.Quantity{}, nil
	}
	q, err := resource.ParseQuantity(strings.TrimSpace(v))
	if err != nil {
		return q, fmt.Errorf("%s %q is not a quantity (like 100m, 256Mi, 1Gi): %w", setting, v, err)
	}
	if q.Sign() < 0 {
		return q, fmt.Errorf("%s %q is negative", setting, v)
	}
	return q, nil
}
