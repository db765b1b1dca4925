package main

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// A rule: a class whose build lacks all of needs must not link any package under prefix.
type depRule struct {
	prefix string
	needs  []string // module, runtime or feature names (any one of them may bring prefix in)
}

var depRules = []depRule{
	{"k8s.io/client-go", nil}, // the edge never talks to the Kubernetes API itself
	{"sigs.k8s.io/controller-runtime", nil},
	{"golang.org/x/net/trace", nil}, // gRPC's tracing (grpcnotrace): debug handlers and a reflective template
	{"net/http/pprof", nil},         // the admin server's profiler (kedge_nopprof): plain builds only
	{"runtime/pprof", nil},
	// Pods are Kubernetes objects: edged runs them and the MetaServer serves them with k8s.io/api
	// (noruntime and edgehub write the few fields they need with their own types). Devices are CRDs
	// whose Go types (sdk/apis/devices/v1beta1) embed metav1.ObjectMeta, and nodestatus reports
	// quantities as resource.Quantity: those need apimachinery only.
	{"k8s.io/api/", []string{"edged", "metaserver"}},
	{"k8s.io/apimachinery/", []string{"edged", "metaserver", "devicetwin", "dmi", "nodestatus", "modbus", "virtual", "thermo"}},
	{"k8s.io/cri-api/", []string{"edged", "cri"}}, // cri: nodestatus asks the CRI for the runtime version,
	{"github.com/hashicorp/go-plugin", []string{"process"}},
	{"google.golang.org/grpc", []string{"process", "dmi"}},
	{"github.com/tetratelabs/wazero", []string{"wasm"}},
	{"github.com/mochi-mqtt/", []string{"eventbus"}},
	{"github.com/quic-go/", []string{"quic"}}, // edgehub's QUIC lane, host/hub/quichub
	{"github.com/kedge-io/kedge/host/hub/quichub", []string{"quic"}},
	{"github.com/eclipse/paho.mqtt.golang", []string{"eventbus", "dmi", "devicetwin", "modbus", "virtual"}},
}

// has reports what a class's build carries: its builtin modules, its runtimes and the features of its
// modules it does not leave out.
func has(l *List, c Class) map[string]bool {
	out := map[string]bool{}
	for _, m := range l.ClassModules(c.Name) {
		out[m] = true
	}
	for _, r := range c.Runtimes {
		out[r] = true
	}
	for _, f := range l.Features {
		if out[f.Module] && !slices.Contains(c.Without, f.Name) {
			out[f.Name] = true
		}
	}
	return out
}

func TestEachClassLinksOnlyWhatItsModulesAndRuntimesNeed(t *testing.T) {
	l, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Classes {
		t.Run(c.Name, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "-tags", strings.Join(l.ClassTags(c), " "), "./cmd/edgecore")
			cmd.Dir = root
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			deps := strings.Fields(string(out))
			carries := has(l, c)
			for _, r := range depRules {
				if slices.ContainsFunc(r.needs, func(n string) bool { return carries[n] }) {
					continue
				}
				var hits []string
				for _, d := range deps {
					if strings.HasPrefix(d, r.prefix) {
						hits = append(hits, d)
					}
				}
				if len(hits) > 0 {
					why := "no class may"
					if len(r.needs) > 0 {
						why = "it has none of " + strings.Join(r.needs, ", ")
					}
					t.Errorf("class %s links %s (%d packages, e.g. %s); %s: find the importer with go list -deps -f '{{.ImportPath}}: {{.Imports}}' -tags %q ./cmd/edgecore",
						c.Name, r.prefix, len(hits), hits[0], why, strings.Join(l.ClassTags(c), " "))
				}
			}
		})
	}
}

// Every class keeps the linker's dead-method elimination: no reflective method call
// (reflect.Value.Method, MethodByName, text/template's field evaluation) is reachable, since one makes
// the linker keep every exported method of every type that reaches an interface. Found on the way:
// cobra's version template and edgecore's systemd unit (text/template; the minimal edgecore was 17.2
// MiB with them, 13.3 without) and gRPC's golang.org/x/net/trace (html/template; the build tag
// grpcnotrace in every class). It also checks the build has no net/http HTTP/2 (nethttpomithttp2).
func TestEveryClassKeepsDeadMethodElimination(t *testing.T) {
	l, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Classes {
		t.Run(c.Name, func(t *testing.T) {
			tags := strings.Join(l.ClassTags(c), " ")
			cmd := exec.Command("go", "build", "-tags", tags, "-ldflags=-dumpdep", "-o", os.DevNull, "./cmd/edgecore")
			cmd.Dir = root
			var deps bytes.Buffer
			cmd.Stderr = &deps
			if err := cmd.Run(); err != nil {
				t.Fatalf("go build -ldflags=-dumpdep: %v\n%s", err, tail(deps.String(), 2000))
			}
			var reflective []string
			http2 := 0
			for line := range strings.Lines(deps.String()) {
				if from, _, ok := strings.Cut(line, " <ReflectMethod> ->"); ok && !slices.Contains(reflective, from) {
					reflective = append(reflective, from)
				}
				if strings.HasPrefix(line, "net/http.(*http2Framer)") { // in h2_bundle.go only, not in omithttp2.go's stubs
					http2++
				}
			}
			if http2 > 0 {
				t.Errorf("class %s links net/http's bundled HTTP/2 (%d references from net/http.(*http2Framer)): its builds carry the tag nethttpomithttp2 (hack/modgen ClassTags)", c.Name, http2)
			}
			if len(reflective) > 0 {
				t.Errorf("class %s reaches reflective method calls in %s: the linker then keeps every exported method; find the caller with go build -tags %q -ldflags=-dumpdep ./cmd/edgecore 2>&1 | grep -F -e '-> %s' (its callers; repeat up the chain)",
					c.Name, strings.Join(reflective, ", "), tags, reflective[0])
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
