package edgecontroller

import "github.com/kedge-io/kedge/sdk"

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Workers > 0, "workers", "must be positive, got %d", m.Workers)
	m.API.Check(&c)
	c.Check(m.NodeGracePeriod > 0, "nodeGracePeriod", "must be positive, got %s", m.NodeGracePeriod)
	c.Check(m.LeaseDuration > 0, "leaseDuration", "must be positive, got %s", m.LeaseDuration)
	c.Check(m.SyncTimeout > 0, "syncTimeout", "must be positive, got %s", m.SyncTimeout)
	c.Check(m.InventoryWait > 0, "inventoryWait", "must be positive, got %s", m.InventoryWait)
	c.Check(m.TokenRetry > 0, "tokenRetry", "must be positive, got %s", m.TokenRetry)
	c.Check(m.LeaseRenewInterval > 0, "leaseRenewInterval", "must be positive, got %s", m.LeaseRenewInterval)
	c.Check(m.NodeStatusUpdateFrequency > 0, "nodeStatusUpdateFrequency", "must be positive, got %s", m.NodeStatusUpdateFrequency)
	c.Check(m.LeaseRenewInterval <= 0 || m.LeaseRenewInterval < m.LeaseDuration, "leaseRenewInterval",
		"%s must be shorter than leaseDuration %s, or Leases expire between renewals", m.LeaseRenewInterval, m.LeaseDuration)
	c.Check(m.HubModule != "", "hubModule", "must name the module that queues messages for edge nodes")
	c.Add("leaderElection", m.LeaderElection.Validate("leaderElection"))
	return c.Err()
}
