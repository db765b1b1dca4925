package config

import (
	"fmt"
	"time"
)

// This file holds a representative config schema shared by the tests: one field of every
// supported kind, shaped like a slice of edgecore.yaml.

type level int

func (l *level) UnmarshalText(b []byte) error {
	for i, n := range levelNames {
		if string(b) == n {
			*l = level(i)
			return nil
		}
	}
	return fmt.Errorf("unknown level %q\n(want debug, info, warn or error)", b) // newline on purpose
}

func (l level) MarshalText() ([]byte, error) { return []byte(levelNames[l]), nil }

var levelNames = []string{"debug", "info", "warn", "error"}

type Common struct {
	Region string `yaml:"region" doc:"Region of the fleet this node belongs to." cfg:"min"`
}

type endpoint struct {
	Name string `yaml:"name"`
	Port uint16 `yaml:"port"`
}

type nodeConfig struct {
	Name    string            `yaml:"name" doc:"Name of the node, unique in the fleet." cfg:"min"`
	Labels  map[string]string `yaml:"labels" doc:"Labels attached to the node object."`
	Address string            `yaml:"address"`
}

type logConfig struct {
	Level   level `yaml:"level" doc:"Lowest level written: debug, info, warn or error."`
	Verbose bool  `yaml:"verbose"`
}

type limits struct {
	Int8   int8    `yaml:"int8"`
	Int    int     `yaml:"int"`
	Int64  int64   `yaml:"int64"`
	Uint8  uint8   `yaml:"uint8"`
	Port   uint16  `yaml:"port"`
	Uint64 uint64  `yaml:"uint64"`
	F32    float32 `yaml:"f32"`
	F64    float64 `yaml:"f64"`
}

type tlsConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

type testConfig struct {
	Common    `yaml:",inline"`
	Node      nodeConfig          `yaml:"node" doc:"This node."`
	Log       logConfig           `yaml:"log"`
	Limits    limits              `yaml:"limits"`
	Timeout   time.Duration       `yaml:"timeout" doc:"How long to wait for the cloud."`
	Tags      []string            `yaml:"tags"`
	Ports     []int               `yaml:"ports"`
	Endpoints []endpoint          `yaml:"endpoints"`
	Peers     map[string]endpoint `yaml:"peers"`
	TLS       *tlsConfig          `yaml:"tls"`
	Modules   map[string]any      `yaml:"modules" doc:"Per-module settings."`
	Ignored   string              // no yaml tag: not configuration
	Skipped   string              `yaml:"-"`
}

func defaults() testConfig {
	return testConfig{
		Common:    Common{Region: "eu"},
		Node:      nodeConfig{Name: "edge0", Labels: map[string]string{"zone": "a"}, Address: "10.0.0.1"},
		Log:       logConfig{Level: 1},
		Limits:    limits{Int8: -8, Int: 1, Int64: 64, Uint8: 8, Port: 1883, Uint64: 1 << 63, F32: 0.5, F64: 2.5},
		Timeout:   30 * time.Second,
		Tags:      []string{"x"},
		Ports:     []int{80},
		Endpoints: []endpoint{{Name: "a", Port: 1}},
		Peers:     map[string]endpoint{"east": {Name: "e", Port: 2}},
		Modules:   map[string]any{"eventbus": map[string]any{"qos": 1}},
	}
}

// eventbusConfig stands for a module's own settings, decoded later from modules.eventbus.
type eventbusConfig struct {
	QoS      int    `yaml:"qos"`
	MQTTMode string `yaml:"mqttMode"`
}
