package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/test/k8senv"
)

// newAggregatedEdgedCluster is newEdgedCluster on a kube-apiserver started with API aggregation
// (a front-proxy CA and client certificate), as an APIService needs.
func newAggregatedEdgedCluster(t *testing.T) *edgedCluster {
	t.Helper()
	fp, err := k8senv.NewFrontProxy(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newEdgedCluster(t, k8senv.WithAggregation(fp))
}

// topRow returns the fields of the row of name in `kubectl top` output.
func topRow(out, name string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == name {
			return f
		}
	}
	return nil
}

// The acceptance path of issue 10's `kubectl top` for edge nodes: the real API server with API
// aggregation, cloudcore serving metrics.k8s.io behind an APIService, edgecore with edged on
// containerd, and a busybox pod burning CPU.
func TestKubectlTopShowsEdgePodsAndNodeThroughCloudcoresMetricsAPI(t *testing.T) {
	e := newAggregatedEdgedCluster(t)
	metricsPort := freePort(t)
	e.cloudEnv = append(e.cloudEnv,
		"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ENABLE=true",
		"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ADDRESS=127.0.0.1:"+strconv.Itoa(metricsPort),
		"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPEINTERVAL=1s",
		"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPETIMEOUT=5s")
	e.withStreams()
	caPEM, err := os.ReadFile(filepath.Join(e.pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// Not e.apply: that applies into the test's namespace; these objects are cluster-wide or in kedge-system.
	manifest := filepath.Join(t.TempDir(), "metrics-apiservice.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: kedge-system
---
apiVersion: v1
kind: Service
metadata:
  name: kedge-metrics
  namespace: kedge-system
spec:
  type: ExternalName
  externalName: 127.0.0.1
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: kedge-metrics, namespace: kedge-system, port: %d}
  caBundle: %s
`, metricsPort, base64.StdEncoding.EncodeToString(caPEM))), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := e.kubectlCode("apply", "-f", manifest); code != 0 {
		t.Fatalf("applying the APIService: exit %d: %s", code, out)
	}
	waitFor(t, "APIService v1beta1.metrics.k8s.io Available", 60*time.Second, func() (bool, string) {
		out, _ := e.kubectlCode("get", "apiservice", "v1beta1.metrics.k8s.io", "-o",
			`jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`)
		return strings.HasPrefix(out, "True"), out
	})
	e.runShell("burner", "while true; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.1; done")

	t.Run("kubectl top pod shows the pod with non-zero CPU", func(t *testing.T) {
		waitFor(t, "kubectl top pod burner", 60*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("top", "pod", "-n", e.ns)
			row := topRow(out, "burner")
			return code == 0 && row != nil && row[1] != "0m" && strings.HasSuffix(row[1], "m") && strings.HasSuffix(row[2], "Mi"), out
		})
		out, code := e.kubectlCode("top", "pod", "burner", "-n", e.ns, "--containers")
		if row := topRow(out, "burner"); code != 0 || row == nil || len(row) < 4 || row[1] != "c" {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
	t.Run("kubectl top node shows the edge node", func(t *testing.T) {
		waitFor(t, "kubectl top node", 30*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("top", "node")
			row := topRow(out, e.node)
			return code == 0 && row != nil && strings.HasSuffix(row[1], "m") && row[1] != "<unknown>", out
		})
	})
	t.Run("a user without RBAC for metrics.k8s.io is refused", func(t *testing.T) {
		out, code := e.kubectlCode("top", "pod", "-n", e.ns, "--as", "nobody")
		if code == 0 || !strings.Contains(out, "forbidden") {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
}
