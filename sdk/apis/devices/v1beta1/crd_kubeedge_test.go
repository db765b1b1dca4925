package v1beta1

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"sigs.k8s.io/yaml"
)

// schemaNode is the part of an OpenAPI v3 schema the comparison reads.
type schemaNode struct {
	Type                 string                 `json:"type"`
	Format               string                 `json:"format"`
	Enum                 []any                  `json:"enum"`
	Required             []string               `json:"required"`
	Properties           map[string]*schemaNode `json:"properties"`
	Items                *schemaNode            `json:"items"`
	AdditionalProperties *schemaNode            `json:"additionalProperties"`
	PreserveUnknown      bool                   `json:"x-kubernetes-preserve-unknown-fields"`
}

type crdFile struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind   string `json:"kind"`
			Plural string `json:"plural"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name    string `json:"name"`
			Served  bool   `json:"served"`
			Storage bool   `json:"storage"`
			Schema  struct {
				OpenAPIV3Schema *schemaNode `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// fieldPaths lists every field path of a schema ("spec.properties[].visitors.configData",
// "[]" for list items, "{}" for map values) with what it means on the wire.
type field struct {
	typ, format     string
	enum            []string
	required        []string
	preserveUnknown bool
}

func fieldPaths(n *schemaNode, path string, out map[string]field) {
	if n == nil {
		return
	}
	f := field{typ: n.Type, format: n.Format, preserveUnknown: n.PreserveUnknown, required: slices.Sorted(slices.Values(n.Required))}
	for _, e := range n.Enum {
		f.enum = append(f.enum, fmt.Sprint(e))
	}
	sort.Strings(f.enum)
	out[path] = f
	for k, v := range n.Properties {
		fieldPaths(v, path+"."+k, out)
	}
	fieldPaths(n.Items, path+"[]", out)
	fieldPaths(n.AdditionalProperties, path+"{}", out)
}

func loadV1beta1(t *testing.T, file string) (crdFile, map[string]field) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.TrimPrefix(bytes.TrimSpace(raw), []byte("---\n"))
	var c crdFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, v := range c.Spec.Versions {
		if v.Name == "v1beta1" {
			if v.Schema.OpenAPIV3Schema == nil {
				t.Fatalf("%s: v1beta1 has no schema", file)
			}
			paths := map[string]field{}
			fieldPaths(v.Schema.OpenAPIV3Schema, c.Spec.Names.Kind, paths)
			return c, paths
		}
	}
	t.Fatalf("%s: no v1beta1 version", file)
	return c, nil
}

// stricter lists where Kedge deliberately requires a field KubeEdge's schema leaves optional: each is
// something KubeEdge's own controllers and mappers cannot work without either, or the key of a list
// Kedge declares as a map (listType=map, so server-side apply merges entries by it).
var stricter = map[string]string{
	"Device spec":                              "a Device without a spec names no model; KubeEdge's devicecontroller cannot place it either",
	"Device.spec deviceModelRef":               "KubeEdge's devicecontroller and mappers look the model up by it",
	"Device.spec.deviceModelRef name":          "the model's name is the reference",
	"Device.spec.methods[] name":               "list key (listType=map)",
	"Device.spec.properties[] name":            "list key (listType=map); matches the model's property",
	"DeviceModel.spec.properties[] name":       "list key (listType=map)",
	"DeviceModel.spec.properties[] type":       "mappers and devicetwin convert values by it",
	"DeviceModel.spec.properties[] accessMode": "decides whether desired values are written",
	"DeviceStatus.status.twins[] propertyName": "a twin names its property",
}

// Every field path of KubeEdge v1.23.1's Device, DeviceModel and DeviceStatus (v1beta1) exists in
// Kedge's CRD of the same kind with the same type, format and free-form-ness; Kedge's enums take at
// least KubeEdge's values and Kedge requires nothing KubeEdge does not, so a manifest written for
// KubeEdge applies to Kedge and reads the same.
func TestCRDsAreASupersetOfKubeEdgeV1231FieldByField(t *testing.T) {
	pairs := []struct{ kubeedge, kedge string }{
		{"devices_v1beta1_device.yaml", "devices.kubeedge.io_devices.yaml"},
		{"devices_v1beta1_devicemodel.yaml", "devices.kubeedge.io_devicemodels.yaml"},
		{"devices_v1beta1_devicestatus.yaml", "devices.kubeedge.io_devicestatuses.yaml"},
	}
	for _, p := range pairs {
		t.Run(p.kubeedge, func(t *testing.T) {
			up, want := loadV1beta1(t, filepath.Join("testdata", "kubeedge-v1.23.1", p.kubeedge))
			ours, got := loadV1beta1(t, filepath.Join("..", "..", "..", "..", "build", "crds", p.kedge))
			if up.Spec.Group != ours.Spec.Group || up.Spec.Names.Kind != ours.Spec.Names.Kind ||
				up.Spec.Names.Plural != ours.Spec.Names.Plural || up.Spec.Scope != ours.Spec.Scope {
				t.Fatalf("KubeEdge serves %s %s/%s (%s), Kedge %s %s/%s (%s)", up.Spec.Names.Kind, up.Spec.Names.Plural, up.Spec.Group, up.Spec.Scope,
					ours.Spec.Names.Kind, ours.Spec.Names.Plural, ours.Spec.Group, ours.Spec.Scope)
			}
			for _, path := range slices.Sorted(func(yield func(string) bool) {
				for k := range want {
					if !yield(k) {
						return
					}
				}
			}) {
				w := want[path]
				g, ok := got[path]
				switch {
				case !ok:
					t.Errorf("%s: KubeEdge has it (type %s), Kedge does not", path, w.typ)
					continue
				case g.typ != w.typ || g.format != w.format:
					t.Errorf("%s: KubeEdge type %s format %q, Kedge type %s format %q", path, w.typ, w.format, g.typ, g.format)
				case w.preserveUnknown && !g.preserveUnknown:
					t.Errorf("%s: KubeEdge keeps unknown fields there (free-form), Kedge prunes them", path)
				}
				if len(g.enum) > 0 {
					for _, e := range w.enum {
						if !slices.Contains(g.enum, e) {
							t.Errorf("%s: KubeEdge allows %q, Kedge's enum %v does not", path, e, g.enum)
						}
					}
					if len(w.enum) == 0 {
						t.Errorf("%s: KubeEdge takes any value, Kedge only %v", path, g.enum)
					}
				}
				for _, r := range g.required {
					if !slices.Contains(w.required, r) && stricter[path+" "+r] == "" {
						t.Errorf("%s: Kedge requires %q, KubeEdge does not (a KubeEdge manifest without it would be refused)", path, r)
					}
				}
			}
		})
	}
}

// The committed KubeEdge CRDs are the release's, byte for byte, when the release folder is here.
func TestKubeEdgeCRDTestdataIsTheReleases(t *testing.T) {
	dir := os.Getenv("KEDGE_KUBEEDGE_DIR")
	if dir == "" {
		abs, _ := filepath.Abs(".")
		for d := abs; ; d = filepath.Dir(d) {
			if st, err := os.Stat(filepath.Join(d, "shared", "kubeedge")); err == nil && st.IsDir() {
				dir = filepath.Join(d, "shared", "kubeedge")
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if dir == "" {
		t.Skip("KubeEdge v1.23.1 release folder not found (../shared/kubeedge or $KEDGE_KUBEEDGE_DIR): the committed copies are not re-checked")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "crds", "devices", "*.yaml"))
	if len(files) != 3 {
		t.Fatalf("%s/crds/devices holds %d CRDs, want 3", dir, len(files))
	}
	for _, f := range files {
		rel, _ := os.ReadFile(f)
		ours, err := os.ReadFile(filepath.Join("testdata", "kubeedge-v1.23.1", filepath.Base(f)))
		if err != nil || !bytes.Equal(rel, ours) {
			t.Errorf("testdata/kubeedge-v1.23.1/%s differs from %s (%v): copy it again", filepath.Base(f), f, err)
		}
	}
}
