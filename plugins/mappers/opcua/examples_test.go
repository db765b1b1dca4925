package opcua

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// The OPC-UA example in examples/devices parses: its configData and every visitor.
func TestTheOPCUAExampleParses(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "devices", "opcua-device.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Protocol struct {
				ConfigData json.RawMessage `json:"configData"`
			}
			Properties []struct {
				Name     string
				Visitors struct {
					ConfigData json.RawMessage `json:"configData"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseProtocolConfig(d.Spec.Protocol.ConfigData); err != nil {
		t.Error(err)
	}
	if len(d.Spec.Properties) == 0 {
		t.Fatal("no properties")
	}
	for _, p := range d.Spec.Properties {
		if _, err := ParseVisitor(p.Visitors.ConfigData); err != nil {
			t.Errorf("property %s: %v", p.Name, err)
		}
	}
}
