package rolloutcontroller

import "github.com/kedge-io/kedge/sdk"

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Workers > 0, "workers", "must be positive, got %d", m.Workers)
	m.API.Check(&c)
	c.Check(m.SyncTimeout > 0, "syncTimeout", "must be positive, got %s", m.SyncTimeout)
	c.Check(m.HubModule != "", "hubModule", "must name the module that queues messages for edge nodes")
	c.Add("leaderElection", m.LeaderElection.Validate("leaderElection"))
	return c.Err()
}
