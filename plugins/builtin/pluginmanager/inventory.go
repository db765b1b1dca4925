package pluginmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
	"github.com/kedge-io/kedge/sdk/inventory"
	"github.com/kedge-io/kedge/sdk/message"
)

// Inventory are the settings of the node's inventory report (sdk/inventory).
type Inventory struct {
	Interval time.Duration `yaml:"interval" doc:"The report goes at least this often (message counters and the outbox depth change all the time, so an idle node sends one per interval); 0 turns the report off."`
	Check    time.Duration `yaml:"check" doc:"How often the node's modules are looked at: a change of the module set, a runtime, release, sha256, health or link state, the version or the class is sent at the next look (at most one report per check); nothing is sent while the hub's link is down."`
}

func defaultInventory() Inventory {
	return Inventory{Interval: 10 * time.Minute, Check: 30 * time.Second}
}

// check records the inventory's problems (keys under "inventory.").
func (i Inventory) check(c *sdk.SettingChecks) {
	switch {
	case i.Interval == 0: // no report
	case i.Interval < 0:
		c.Check(false, "inventory.interval", "must be positive (0: no report), got %s", i.Interval)
	case i.Check < time.Second:
		c.Check(false, "inventory.check", "must be at least 1s, got %s", i.Check)
	default:
		c.Check(i.Check <= i.Interval, "inventory.check", "%s must not be longer than inventory.interval %s", i.Check, i.Interval)
	}
}

// invState is what the reporter last sent.
type invState struct {
	key     string
	sentAt  time.Time
	reports *prometheus.CounterVec
	bytes   prometheus.Gauge
}

// reportInventory looks at the node every inventory.check and sends the report when it changed or
// inventory.interval passed since the last one, until ctx ends.
func (m *Module) reportInventory(ctx context.Context) {
	tick := time.NewTicker(m.Inventory.Check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := m.inventoryOnce(ctx, time.Now()); err != nil && ctx.Err() == nil {
			m.host.Logger().Warn("inventory report not sent; tried again at the next check", "err", err)
		}
	}
}

// inventoryOnce sends the report if it is due at now.
func (m *Module) inventoryOnce(ctx context.Context, now time.Time) error {
	sts, err := m.modules(ctx)
	if err != nil {
		return err
	}
	for _, st := range sts {
		if st.Name == m.Hub && strings.HasPrefix(st.Link, "down") {
			return nil // it would wait in the outbox; the next look after the link is back sends it
		}
	}
	rep := m.inventoryReport(ctx, sts, now)
	key := inventoryKey(rep, m.Hub)
	reason := "change"
	switch {
	case key != m.inv.key:
	case now.Sub(m.inv.sentAt) >= m.Inventory.Interval:
		reason = "period"
	default:
		return nil
	}
	raw, err := encodeBounded(&rep)
	if err != nil {
		return err
	}
	res := message.Resource{Namespace: inventory.Namespace, Type: inventory.Type, Name: rep.Node}
	msg := message.New(Name, inventory.Group, message.OpUpdate, res.Edge())
	msg.Content = raw
	if err := m.host.Send(ctx, m.Hub, msg); err != nil {
		return fmt.Errorf("inventory to %s: %w", m.Hub, err)
	}
	m.inv.key, m.inv.sentAt = key, now
	m.inv.reports.WithLabelValues(reason).Inc()
	m.inv.bytes.Set(float64(len(raw)))
	return nil
}

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// inventoryReport builds the report from the host's module list.
func (m *Module) inventoryReport(ctx context.Context, sts []control.Status, now time.Time) inventory.Report {
	rep := inventory.Report{V: inventory.V, Node: m.host.NodeName(), At: now.UTC().Truncate(time.Second), Modules: []inventory.Module{}}
	if v, ok := m.host.(sdk.HostVersioner); ok {
		rep.Version = inventory.Clean(v.HostVersion())
	}
	if c, ok := m.host.(sdk.HostClasser); ok {
		rep.Class = c.HostClass()
	}
	if o, ok := m.host.(sdk.OutboxProvider); ok {
		if n, err := o.Outbox().Len(ctx); err == nil {
			rep.Outbox = n
		} else {
			m.host.Logger().Warn("outbox depth unknown; reported as 0", "err", err)
		}
	}
	for _, st := range sts {
		if len(rep.Modules) == inventory.MaxModules {
			m.host.Logger().Warn("more modules than an inventory report holds; the rest are left out", "max", inventory.MaxModules, "modules", len(sts))
			break
		}
		mod := inventory.Module{Name: st.Name, Runtime: string(st.Runtime), Release: inventory.Clean(st.Release),
			Health: inventory.Cut(st.Health), Link: inventory.Cut(st.Link),
			Handled: int64(st.Handled), Failed: int64(st.Failed), Queued: st.Queued}
		if hexSHA256.MatchString(st.Digest) {
			mod.SHA256 = st.Digest
		}
		rep.Modules = append(rep.Modules, mod)
	}
	return rep
}

// inventoryKey is what makes a report worth sending before the interval: rep without its time,
// counters and outbox depth, links only as up or down, the hub's link left out.
func inventoryKey(rep inventory.Report, hub string) string {
	rep.At, rep.Outbox = time.Time{}, 0
	mods := make([]inventory.Module, len(rep.Modules))
	for i, mod := range rep.Modules {
		mod.Handled, mod.Failed, mod.Queued = 0, 0, 0
		mod.Link, _, _ = strings.Cut(mod.Link, ":")
		if mod.Name == hub {
			mod.Link = ""
		}
		mods[i] = mod
	}
	rep.Modules = mods
	b, _ := json.Marshal(rep)
	return string(b)
}

// encodeBounded encodes rep within inventory.MaxBytes: health and link texts are cut to 64 bytes
// first, then modules are left out from the end.
func encodeBounded(rep *inventory.Report) ([]byte, error) {
	raw, err := json.Marshal(rep)
	if err != nil || len(raw) <= inventory.MaxBytes {
		return raw, err
	}
	for i := range rep.Modules {
		mod := &rep.Modules[i]
		if len(mod.Health) > 64 {
			mod.Health = strings.ToValidUTF8(mod.Health[:61], "") + "…"
		}
		if len(mod.Link) > 64 {
			mod.Link = strings.ToValidUTF8(mod.Link[:61], "") + "…"
		}
	}
	for {
		raw, err = json.Marshal(rep)
		if err != nil || len(raw) <= inventory.MaxBytes || len(rep.Modules) == 0 {
			return raw, err
		}
		rep.Modules = rep.Modules[:len(rep.Modules)-1]
	}
}
