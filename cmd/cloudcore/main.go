// Command cloudcore runs beside the Kubernetes API server and serves the edge nodes connected to it.
package main

import (
	"os"
	"strings"

	"github.com/kedge-io/kedge/host/daemon"
)

// Config is cloudcore.yaml.
type Config struct {
	Instance    InstanceConfig `yaml:"instance" doc:"This cloudcore instance."`
	daemon.Base `yaml:",inline"`
}

// InstanceConfig names the instance.
type InstanceConfig struct {
	Name string `yaml:"name" doc:"Instance name (in logs and node ownership); defaults to the host name, lower-cased."`
}

func (c *Config) Identity() string { return c.Instance.Name }

func defaults() daemon.Config {
	host, _ := os.Hostname()
	base := daemon.DefaultBase("cloudcore", "127.0.0.1:10006")
	// cloudcore's heap is mostly per connected node (TLS state, buffers, informer objects) and grows
	// with the fleet; collecting at +50% instead of +100% holds less per idle node (BENCHMARKS.md,
	// scale) for a little more GC CPU, which an idle fleet barely allocates.
	base.Runtime.GCPercent = 50
	return &Config{
		Instance: InstanceConfig{Name: strings.ToLower(host)},
		Base:     base,
	}
}

var spec = daemon.Spec{
	Binary: "cloudcore",
	Short:  "Kedge cloud side: serves edge nodes beside a Kubernetes API server",
	Long: `cloudcore runs beside the Kubernetes API server. It watches the API for what edge nodes need,
carries it to them over an mTLS websocket hub in KubeEdge's wire format, and writes what they
report back into the API. Its modules are chosen and configured in cloudcore.yaml.

Configuration is layered: built-in defaults < the --config file < KEDGE_ environment variables
(KEDGE_LOG__LEVEL=debug sets log.level; "__" separates keys) < --set flags.`,
	Example: `  cloudcore --defaultconfig > /etc/kedge/cloudcore.yaml   # every setting, commented
  cloudcore --config /etc/kedge/cloudcore.yaml
  cloudcore --set log.level=debug`,
	NewConfig: defaults,
}

func main() {
	os.Exit(daemon.Main(spec, os.Args[1:]))
}
