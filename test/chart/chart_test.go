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
// validation, defaulting, strict field validation), with the CRDs applied for real first: the chart's
// and the Prometheus Operator's ServiceMonitor/PrometheusRule (testdata/monitoring-crds.yaml).
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
				default:
					rest.WriteString(o.raw + "\n---\n")
					sent++
				}
			}
			if crds.Len() == 0 {
				t.Fatal("helm template --include-crds rendered no CRDs")
			}
			kubectl(t, crds.String(), "apply", "--server-side", "-f", "-")
			applyMonitoringCRDs(t)
			kubectl(t, "", "wait", "--for", "condition=Established", "--timeout", "120s", "crd/devices.devices.kubeedge.io",
				"crd/devicemodels.devices.kubeedge.io", "crd/pluginrollouts.kedge.io")
			got := kubectl(t, rest.String(), "apply", "--dry-run=server", "-f", "-")
			for _, w := range tc.want {
				if strings.HasPrefix(w, "CustomResourceDefinition/") {
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

// applyMonitoringCRDs applies the ServiceMonitor and PrometheusRule CRDs of testdata (written from the
// Prometheus Operator's documented API) and waits until the API server serves them.
func applyMonitoringCRDs(t *testing.T) {
	t.Helper()
	kubectl(t, "", "apply", "--server-side", "-f", "testdata/monitoring-crds.yaml")
	kubectl(t, "", "wait", "--for", "condition=Established", "--timeout", "120s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
}

// The ServiceMonitor and PrometheusRule the chart renders are created for real (not a dry run) against
// the Prometheus Operator's schema: nothing the chart wrote is pruned (the stored spec equals the
// rendered one), the ServiceMonitor selects the chart's admin Service by its labels and names its
// port; a misspelt or mistyped field in the template is refused naming the field.
func TestMonitoringObjectsApplyAgainstThePrometheusOperatorSchema(t *testing.T) {
	needHelm(t)
	if env == nil {
		t.Skip("no control plane")
	}
	const ns = "kedge-monitoring"
	if out, err := env.Kubectl("create", "namespace", ns); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatal(out)
	}
	applyMonitoringCRDs(t)
	out, err := helmbin.Template(ns, false, []string{allModules})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]object{}
	for _, o := range split(t, out) {
		byName[o.Kind+"/"+o.Metadata.Name] = o
	}
	for _, key := range []string{"ServiceMonitor/kedge", "PrometheusRule/kedge"} {
		o, ok := byName[key]
		if !ok {
			t.Fatalf("the chart rendered no %s", key)
		}
		kubectl(t, o.raw, "apply", "-f", "-")
		kind, name, _ := strings.Cut(key, "/")
		stored := kubectl(t, "", "get", strings.ToLower(kind), name, "-n", ns, "-o", "json")
		var got, want struct {
			Spec map[string]any `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(stored), &got); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal([]byte(o.raw), &want); err != nil {
			t.Fatal(err)
		}
		g, _ := yaml.Marshal(got.Spec)
		w, _ := yaml.Marshal(want.Spec)
		if !bytes.Equal(g, w) {
			t.Errorf("%s as stored differs from the rendered one (a field was pruned or defaulted):\nstored:\n%s\nrendered:\n%s", key, g, w)
		}
	}

	// The ServiceMonitor finds the admin Service: its selector's labels are on that Service, and the
	// endpoint's port is one of the Service's named ports.
	var sm struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port string `json:"port"`
				Path string `json:"path"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	var svc struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Ports []struct {
				Name string `json:"name"`
			} `json:"ports"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(byName["ServiceMonitor/kedge"].raw), &sm); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(byName["Service/kedge-admin"].raw), &svc); err != nil {
		t.Fatal(err)
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor selector %v endpoints %v", sm.Spec.Selector.MatchLabels, sm.Spec.Endpoints)
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s; the admin Service has %s=%q", k, v, k, svc.Metadata.Labels[k])
		}
	}
	found := false
	for _, p := range svc.Spec.Ports {
		found = found || p.Name == sm.Spec.Endpoints[0].Port
	}
	if !found || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoint %+v: not a named port of the admin Service %+v", sm.Spec.Endpoints[0], svc.Spec.Ports)
	}

	// A typo in the template is refused by the schema, naming the field.
	for _, tc := range []struct {
		name, key, from, to, want string
	}{
		{"misspelt endpoint field", "ServiceMonitor/kedge", "    interval:", "    intervall:", "intervall"},
		{"misspelt spec field", "ServiceMonitor/kedge", "  endpoints:", "  endpoint:", "endpoint"},
		{"interval not a duration", "ServiceMonitor/kedge", "interval: 30s", "interval: 30 seconds", "interval"},
		{"misspelt rule field", "PrometheusRule/kedge", "      expr:", "      exp:", "exp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := byName[tc.key].raw
			if !strings.Contains(raw, tc.from) {
				t.Fatalf("rendered %s has no %q", tc.key, tc.from)
			}
			bad := strings.Replace(raw, tc.from, tc.to, 1)
			cmd := exec.Command(filepath.Join(env.BinDir, "kubectl"), "--kubeconfig", env.Kubeconfig, "apply", "--dry-run=server", "-f", "-")
			cmd.Stdin = strings.NewReader(bad)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("kubectl apply of %s with %q accepted or unclear (err %v): %s", tc.key, tc.to, err, out)
			}
		})
	}
}

// The cloudcore.yaml the chart renders is a valid cloudcore config for the real binary (`cloudcore
// validate`: every key known, every value checked), for the default values, the all-modules HA
// values and the console; with replicas > 1 it records node ownership in Leases and forwards
// requests between replicas, each reached at its pod IP (set by the Deployment), and with one
// replica it does neither.
func TestRenderedConfigPassesCloudcoreValidateAndHATurnsOnOwnership(t *testing.T) {
	needHelm(t)
	bin := filepath.Join(t.TempDir(), "cloudcore")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cloudcore")
	build.Dir = k8senv.Repo()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cloudcore: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name        string
		files, sets []string
		ha, wired   bool // ownership and forwarding on; the Deployment's pod-IP forward address and port
		modules     string
	}{
		{"default", nil, nil, false, false, "cloudhub, devicecontroller, edgecontroller"},
		{"all-modules-ha", []string{allModules}, nil, true, true, "cloudhub, cloudbus, cloudstream, devicecontroller, edgecontroller, rolloutcontroller"},
		{"two replicas, ownership opted out", nil, []string{"replicas=2", "modules.cloudhub.ownership.enable=false"}, false, true, "cloudhub, devicecontroller, edgecontroller"},
		{"console", nil, []string{"modules.console.enable=true"}, false, false, "cloudhub, console, devicecontroller, edgecontroller"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmbin.Template("kedge-system", false, tc.files, tc.sets...)
			if err != nil {
				t.Fatal(err)
			}
			var config string
			var deploy struct {
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Env []struct {
									Name  string `json:"name"`
									Value string `json:"value"`
								} `json:"env"`
								Ports []struct {
									Name          string `json:"name"`
									ContainerPort int    `json:"containerPort"`
								} `json:"ports"`
							} `json:"containers"`
						} `json:"spec"`
					} `json:"template"`
				} `json:"spec"`
			}
			for _, o := range split(t, out) {
				switch o.Kind + "/" + o.Metadata.Name {
				case "ConfigMap/kedge":
					var cm struct {
						Data map[string]string `json:"data"`
					}
					if err := yaml.Unmarshal([]byte(o.raw), &cm); err != nil {
						t.Fatal(err)
					}
					config = cm.Data["cloudcore.yaml"]
				case "Deployment/kedge":
					if err := yaml.Unmarshal([]byte(o.raw), &deploy); err != nil {
						t.Fatal(err)
					}
				}
			}
			f := filepath.Join(t.TempDir(), "cloudcore.yaml")
			if err := os.WriteFile(f, []byte(config), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := exec.Command(bin, "validate", "--config", f).CombinedOutput()
			if err != nil || !strings.Contains(string(got), "modules in start order: "+tc.modules) {
				t.Fatalf("cloudcore validate on the chart's cloudcore.yaml: %v: %s\n%s", err, got, config)
			}
			var cfg struct {
				Modules struct {
					Cloudhub struct {
						Ownership struct {
							Enable bool `json:"enable"`
						} `json:"ownership"`
					} `json:"cloudhub"`
					Cloudstream struct {
						Forward struct {
							Enable  bool   `json:"enable"`
							Address string `json:"address"`
						} `json:"forward"`
					} `json:"cloudstream"`
				} `json:"modules"`
			}
			if err := yaml.Unmarshal([]byte(config), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Modules.Cloudhub.Ownership.Enable != tc.ha || cfg.Modules.Cloudstream.Forward.Enable != tc.ha {
				t.Errorf("ownership %v, forward %v; want both %v", cfg.Modules.Cloudhub.Ownership.Enable, cfg.Modules.Cloudstream.Forward.Enable, tc.ha)
			}
			if len(deploy.Spec.Template.Spec.Containers) != 1 {
				t.Fatal("no cloudcore container rendered")
			}
			c := deploy.Spec.Template.Spec.Containers[0]
			podIP, fwd := -1, -1
			for i, e := range c.Env {
				switch e.Name {
				case "POD_IP":
					podIP = i
				case "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS":
					fwd = i
					if e.Value != "$(POD_IP):10005" {
						t.Errorf("forward address %q", e.Value)
					}
				}
			}
			port := false
			for _, p := range c.Ports {
				port = port || (p.Name == "forward" && p.ContainerPort == 10005)
			}
			// $(POD_IP) expands only when POD_IP is defined before the variable using it.
			if wired := podIP >= 0 && fwd > podIP && port && cfg.Modules.Cloudstream.Forward.Address == "0.0.0.0:10005"; wired != tc.wired {
				t.Errorf("Deployment env POD_IP at %d, forward address at %d, forward port %v, listen %q; want HA wiring %v",
					podIP, fwd, port, cfg.Modules.Cloudstream.Forward.Address, tc.wired)
			}
		})
	}
}
