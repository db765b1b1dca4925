// Package chart tests deploy/helm/kedge with the real Helm CLI (built from the Go module proxy by
// hack/helm.sh) and a real kube-apiserver (test/k8senv): lint, template, the CRDs applied for real and
// every rendered object accepted by the API server in a server-side dry run.
package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/test/helmbin"
	"github.com/kedge-io/kedge/test/k8senv"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	os.Exit(k8senv.RunTests(m, "test/chart", func(e *k8senv.Env) error { env = e; return nil }))
}

func needHelm(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the real helm binary: skipped with -short")
	}
	if _, err := helmbin.Path(); err != nil {
		t.Fatal(err)
	}
}

const allModules = "testdata/all-modules-ha.yaml"

// object is the part of a rendered manifest the tests look at.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Rules []struct {
		APIGroups []string `json:"apiGroups"`
		Resources []string `json:"resources"`
		Verbs     []string `json:"verbs"`
	} `json:"rules"`
	raw string
}

func split(t *testing.T, manifest string) []object {
	t.Helper()
	var out []object
	for _, doc := range strings.Split(manifest, "\n---") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if o.Kind == "" {
			continue
		}
		o.raw = doc
		out = append(out, o)
	}
	return out
}

func kinds(objs []object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Kind+"/"+o.Metadata.Name)
	}
	sort.Strings(ks)
	return ks
}

func TestHelmLintPassesForDefaultAndAllModulesValues(t *testing.T) {
	needHelm(t)
	for _, tc := range []struct{ name, values string }{{"default", ""}, {"all-modules-ha", allModules}} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"lint", "--strict", helmbin.Chart(), "--kube-version", "1.36.3"}
			if tc.values != "" {
				args = append(args, "-f", tc.values)
			}
			out, err := helmbin.Run(args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint: %s", out)
			}
		})
	}
}

// The CRDs in the chart are build/crds, byte for byte (helm installs crds/ before the templates).
func TestChartCRDsAreTheProjectCRDs(t *testing.T) {
	want, _ := filepath.Glob(filepath.Join(k8senv.Repo(), "build", "crds", "*.yaml"))
	got, _ := filepath.Glob(filepath.Join(helmbin.Chart(), "crds", "*.yaml"))
	if len(want) == 0 || len(want) != len(got) {
		t.Fatalf("build/crds has %d files, the chart's crds/ %d", len(want), len(got))
	}
	for _, w := range want {
		a, _ := os.ReadFile(w)
		b, err := os.ReadFile(filepath.Join(helmbin.Chart(), "crds", filepath.Base(w)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("chart crds/%s differs from build/crds (copy it: cp build/crds/*.yaml deploy/helm/kedge/crds/)", filepath.Base(w))
		}
	}
}

// Every object the chart renders is accepted by a real kube-apiserver (server-side dry run: admission,
// validation, defaulting), with the CRDs applied for real first.
func TestRenderedObjectsPassServerSideDryRun(t *testing.T) {
	needHelm(t)
	if env == nil {
		t.Skip("no control plane")
	}
	if out, err := env.Kubectl("create", "namespace", "kedge-system"); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatal(out)
	}
	for _, tc := range []struct {
		name, values string
		want         []string
	}{
		{"default", "", []string{"Deployment/kedge", "Service/kedge", "ServiceAccount/kedge", "ClusterRole/kedge:cloudcore", "Role/kedge:cloudcore",
			"Role/kedge:node-leases", "PodDisruptionBudget/kedge", "ConfigMap/kedge", "CustomResourceDefinition/devices.devices.kubeedge.io"}},
		{"all-modules-ha", allModules, []string{"APIService/v1beta1.metrics.k8s.io", "Service/kedge-stream", "Service/kedge-metrics",
			"RoleBinding/kedge:auth-reader", "ServiceMonitor/kedge", "PrometheusRule/kedge", "ConfigMap/kedge-dashboard"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []string
			if tc.values != "" {
				files = []string{tc.values}
			}
			out, err := helmbin.Template("kedge-system", true, files)
			if err != nil {
				t.Fatal(err)
			}
			objs := split(t, out)
			have := strings.Join(kinds(objs), " ")
			for _, w := range tc.want {
				if !strings.Contains(" "+have+" ", " "+w+" ") {
					t.Errorf("rendered objects lack %s; have %s", w, have)
				}
			}
			var crds, rest bytes.Buffer
			sent := 0
			for _, o := range objs {
				switch {
				case o.Kind == "CustomResourceDefinition":
					crds.WriteString(o.raw + "\n---\n")
				case strings.HasPrefix(o.APIVersion, "monitoring.coreos.com/"):
					// The Prometheus Operator's CRDs are not part of this cluster: parsed above, not sent.
					t.Logf("not sent to the API server (no Prometheus Operator CRDs here): %s/%s", o.Kind, o.Metadata.Name)
				default:
					rest.WriteString(o.raw + "\n---\n")
					sent++
				}
			}
			if crds.Len() == 0 {
				t.Fatal("helm template --include-crds rendered no CRDs")
			}
			kubectl(t, crds.String(), "apply", "--server-side", "-f", "-")
			kubectl(t, "", "wait", "--for", "condition=Established", "--timeout", "120s", "crd/devices.devices.kubeedge.io",
				"crd/devicemodels.devices.kubeedge.io", "crd/pluginrollouts.kedge.io")
			got := kubectl(t, rest.String(), "apply", "--dry-run=server", "-f", "-")
			for _, w := range tc.want {
				if strings.HasPrefix(w, "CustomResourceDefinition/") || strings.HasPrefix(w, "ServiceMonitor/") || strings.HasPrefix(w, "PrometheusRule/") {
					continue
				}
				kind, name, _ := strings.Cut(w, "/")
				if !strings.Contains(strings.ToLower(got), strings.ToLower(kind)) || !strings.Contains(got, name) {
					t.Errorf("dry run output does not mention %s:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "(server dry run)"); n != sent {
				t.Errorf("the API server accepted %d of the %d objects sent:\n%s", n, sent, got)
			}
		})
	}
}

func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(env.BinDir, "kubectl"), append([]string{"--kubeconfig", env.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Invalid values fail helm template with a message naming the value (values.schema.json, or the
// chart's own checks for combinations).
func TestInvalidValuesFailNamingTheValue(t *testing.T) {
	needHelm(t)
	for _, tc := range []struct {
		name string
		sets []string
		want []string
	}{
		{"replicas not a number", []string{"replicas=two"}, []string{"replicas", "integer"}},
		{"zero replicas", []string{"replicas=0"}, []string{"replicas", "minimum"}},
		{"unknown service type", []string{"service.type=Ingress"}, []string{"service/type", "ClusterIP"}},
		{"misspelt top-level value", []string{"replica=3"}, []string{"replica"}},
		{"module enable not a boolean", []string{"modules.edgecontroller.enable=yes"}, []string{"modules/edgecontroller/enable", "boolean"}},
		{"cloudhub turned off", []string{"modules.cloudhub.enable=false"}, []string{"modules/cloudhub/enable"}},
		{"nodePort out of range", []string{"service.hub.nodePort=80"}, []string{"service/hub/nodePort"}},
		{"HA without a shared CA", []string{"replicas=3", "caSecret.enable=false"}, []string{"replicas > 1 needs caSecret.enable"}},
		{"cloudstream without its client CA", []string{"modules.cloudstream.enable=true"}, []string{"cloudstream.clientCA"}},
		{"APIService without the metrics API", []string{"metricsAPIService.enable=true"}, []string{"modules.cloudstream.metricsAPI.enable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmbin.Template("kedge-system", false, nil, tc.sets...)
			if err == nil {
				t.Fatalf("helm template --set %v succeeded; want an error naming %v\n%s", tc.sets, tc.want, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q: %v", w, err)
				}
			}
		})
	}
}

// The RBAC follows the modules: nothing cluster-wide with only cloudhub, no Secrets beyond the release
// namespace without edgecontroller, devices only with devicecontroller.
func TestRBACIsDerivedFromEnabledModules(t *testing.T) {
	needHelm(t)
	off := []string{"modules.edgecontroller.enable=false", "modules.devicecontroller.enable=false"}
	for _, tc := range []struct {
		name        string
		sets        []string
		has, hasNot []string // "Kind/name resource" entries
	}{
		{"hub only", off, []string{"Role/kedge:cloudcore secrets", "Role/kedge:cloudcore leases"},
			[]string{"ClusterRole/kedge:cloudcore", "Role/kedge:node-leases"}},
		{"hub only, CA in files", append(off, "caSecret.enable=false"), nil, []string{"Role/kedge:cloudcore secrets"}},
		{"default", nil, []string{"ClusterRole/kedge:cloudcore secrets", "ClusterRole/kedge:cloudcore devices", "Role/kedge:node-leases leases"},
			[]string{"ClusterRole/kedge:cloudcore pluginrollouts", "ClusterRole/kedge:cloudcore subjectaccessreviews"}},
		{"devices without edgecontroller", []string{"modules.edgecontroller.enable=false"}, []string{"ClusterRole/kedge:cloudcore devices"},
			[]string{"ClusterRole/kedge:cloudcore secrets", "ClusterRole/kedge:cloudcore pods", "Role/kedge:node-leases"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmbin.Template("kedge-system", false, nil, tc.sets...)
			if err != nil {
				t.Fatal(err)
			}
			grants := map[string]bool{}
			for _, o := range split(t, out) {
				if o.Kind != "Role" && o.Kind != "ClusterRole" {
					continue
				}
				grants[o.Kind+"/"+o.Metadata.Name] = true
				for _, r := range o.Rules {
					for _, res := range r.Resources {
						grants[o.Kind+"/"+o.Metadata.Name+" "+res] = true
					}
					for _, v := range r.Verbs {
						if v == "*" {
							t.Errorf("%s/%s grants every verb on %v", o.Kind, o.Metadata.Name, r.Resources)
						}
					}
					for _, res := range r.Resources {
						if res == "*" {
							t.Errorf("%s/%s grants every resource", o.Kind, o.Metadata.Name)
						}
					}
				}
			}
			for _, h := range tc.has {
				if !grants[h] {
					t.Errorf("missing grant %s", h)
				}
			}
			for _, h := range tc.hasNot {
				if grants[h] {
					t.Errorf("unexpected grant %s", h)
				}
			}
		})
	}
}
