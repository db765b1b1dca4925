// Command edgecore runs on each edge node: it keeps the node's pods, devices and state working, with
// or without the cloud.
package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/host/daemon"
)

// Config is edgecore.yaml.
type Config struct {
	Node        NodeConfig `yaml:"node" doc:"This edge node." cfg:"min"`
	daemon.Base `yaml:",inline"`
}

// NodeConfig names the node.
type NodeConfig struct {
	Name string `yaml:"name" doc:"Node name in Kubernetes (a DNS-1123 subdomain); defaults to the host name, lower-cased." cfg:"min"`
}

func (c *Config) Identity() string { return c.Node.Name }

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Validate checks what the types alone cannot.
func (c *Config) Validate(source string) error {
	if len(c.Node.Name) > 253 || !dns1123.MatchString(c.Node.Name) {
		return &config.Error{Source: source, Key: "node.name",
			Problem: fmt.Sprintf("%q is not a valid node name (lower-case letters, digits, '-' and '.', at most 253 characters)", c.Node.Name)}
	}
	return nil
}

func defaults() daemon.Config {
	host, _ := os.Hostname()
	base := daemon.DefaultBase("edgecore", "127.0.0.1:10360")
	// An edge box is short of memory, not of CPU at idle: half the GC's default heap growth, a soft
	// ceiling well above what edgecore needs with edged and its pods (BENCHMARKS.md, device classes),
	// and a quarter of SQLite's default page cache per connection (the edge's store is small).
	base.Runtime = daemon.RuntimeConfig{GCPercent: 50, MemoryLimitMiB: 64}
	base.Store.CacheKiB = 512
	return &Config{
		Node: NodeConfig{Name: strings.ToLower(host)},
		Base: base,
	}
}

var spec = daemon.Spec{
	Binary: "edgecore",
	Short:  "Kedge edge agent: pods, devices and state on an edge node, online or offline",
	Long: `edgecore runs on every edge node. It connects to cloudcore, keeps everything the node needs in a
local SQLite store (so it keeps working offline and across reboots) and runs its modules — each
builtin, a plugin process or a WASM module, as edgecore.yaml says.

Configuration is layered: built-in defaults < the --config file < KEDGE_ environment variables
(KEDGE_NODE__NAME=edge-1 sets node.name; "__" separates keys) < --set flags.`,
	Example: `  edgecore --defaultconfig > /etc/kedge/edgecore.yaml   # every setting, commented
  edgecore --config /etc/kedge/edgecore.yaml
  edgecore --set node.name=edge-1 --set log.level=debug
  KEDGE_STORE__PATH=/data/edgecore.db edgecore`,
	NewConfig: defaults,
}

func main() {
	os.Exit(daemon.Main(spec, os.Args[1:]))
}
