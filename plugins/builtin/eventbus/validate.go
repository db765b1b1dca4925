package eventbus

import (
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// The files named under broker are read at Start (newBrokerAuth), not here.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.MQTTMode == ModeInternal || m.MQTTMode == ModeExternal || m.MQTTMode == ModeBoth, "mqttMode",
		"%q: want internal, external or both", m.MQTTMode)
	if m.MQTTMode != ModeExternal {
		if _, _, err := net.SplitHostPort(m.InternalAddress); err != nil {
			c.Check(false, "internalAddress", "%q is not host:port: %v", m.InternalAddress, err)
		}
		m.Broker.check(&c)
	}
	if m.MQTTMode != ModeInternal {
		u, err := url.Parse(m.ExternalURL)
		c.Check(err == nil && u.Host != "" && (u.Scheme == "tcp" || u.Scheme == "mqtt"), "externalURL",
			"%q: want tcp://host:port", m.ExternalURL)
	}
	c.Check(len(m.Topics) > 0, "topics", "at least one topic filter is needed")
	for i, f := range m.Topics {
		c.Add(fmt.Sprintf("topics[%d]", i), validFilter(f))
	}
	for i, f := range m.UserTopics {
		c.Add(fmt.Sprintf("userTopics[%d]", i), validFilter(f))
	}
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"keepAlive", m.KeepAlive}, {"connectTimeout", m.ConnectTimeout}, {"maxReconnectInterval", m.MaxReconnectInterval},
		{"writeTimeout", m.WriteTimeout}, {"sendTimeout", m.SendTimeout}, {"ackTimeout", m.AckTimeout},
	} {
		c.Check(d.d > 0, d.key, "must be positive, got %s", d.d)
	}
	c.Check(m.TwinModule != "", "twinModule", "must name the module that receives the device topics")
	return c.Err()
}
