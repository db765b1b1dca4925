package nodestatus

import (
	"time"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Interval >= time.Second, "interval", "must be at least 1s, got %s", m.Interval)
	c.Check(m.UnchangedInterval >= 0, "unchangedInterval", "must not be negative (0 sends every report), got %s", m.UnchangedInterval)
	c.Check(m.MaxPods >= 0, "maxPods", "must not be negative, got %d", m.MaxPods)
	c.Check(m.ProcRoot != "", "procRoot", "must not be empty")
	c.Check(m.StoragePath != "", "storagePath", "must not be empty")
	c.Check(m.MetaManager != "", "metaManager", "must name the module the report is sent to")
	for _, q := range [][2]string{{"systemReserved.cpu", m.SystemReserved.CPU}, {"systemReserved.memory", m.SystemReserved.Memory},
		{"systemReserved.ephemeral-storage", m.SystemReserved.EphemeralStorage}} {
		_, err := parseQuantity("value", q[1])
		c.Add(q[0], err)
	}
	for _, t := range [][2]string{{"pressure.memoryAvailable", m.Pressure.MemoryAvailable}, {"pressure.diskAvailable", m.Pressure.DiskAvailable},
		{"pressure.pidAvailable", m.Pressure.PIDAvailable}} {
		_, err := parseThreshold("value", t[1])
		c.Add(t[0], err)
	}
	return c.Err()
}
