package modbus

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// The Modbus examples in examples/devices parse: every Device's configData and every visitor with
// its model's property type, so the documentation cannot drift from what the mapper accepts.
func TestTheModbusExamplesParseWithTheirModels(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "examples", "devices")
	for _, pair := range [][2]string{
		{"modbus-model.yaml", "modbus-device.yaml"},
		{"modbus-rtu-model.yaml", "modbus-rtu-device.yaml"},
	} {
		types := map[string]string{}
		for _, doc := range docs(t, filepath.Join(dir, pair[0])) {
			var m struct {
				Spec struct {
					Properties []struct{ Name, Type string }
				}
			}
			if err := json.Unmarshal(doc, &m); err != nil {
				t.Fatal(err)
			}
			for _, p := range m.Spec.Properties {
				types[p.Name] = p.Type
			}
		}
		devices := docs(t, filepath.Join(dir, pair[1]))
		if len(devices) == 0 {
			t.Fatalf("%s has no Device", pair[1])
		}
		for _, doc := range devices {
			var d struct {
				Metadata struct{ Name string }
				Spec     struct {
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
			if err := json.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
			if _, err := ParseProtocolConfig(d.Spec.Protocol.ConfigData); err != nil {
				t.Errorf("%s %s: %v", pair[1], d.Metadata.Name, err)
			}
			for _, p := range d.Spec.Properties {
				if _, err := ParseVisitor(p.Visitors.ConfigData, types[p.Name]); err != nil {
					t.Errorf("%s %s property %s: %v", pair[1], d.Metadata.Name, p.Name, err)
				}
			}
		}
	}
}

func docs(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, part := range bytes.Split(b, []byte("\n---\n")) {
		j, err := yaml.YAMLToJSON(part)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if string(j) != "null" {
			out = append(out, j)
		}
	}
	return out
}
