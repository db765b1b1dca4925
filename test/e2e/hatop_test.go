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
)

// kubectl top through a replica that holds none of the nodes: the real API server with aggregation,
// its APIService pointing at replica b's metrics API, while the edge node's stream tunnel (and so
// its scrapes) is on replica a. b answers with the usage a scraped, asked over the replicas' mTLS.
func TestKubectlTopThroughAReplicaThatHoldsNoneOfTheNodes(t *testing.T) {
	e := newAggregatedEdgedCluster(t)
	fwdA, fwdB, metricsA, metricsB := freePort(t), freePort(t), freePort(t), freePort(t)
	metricsEnv := func(port int) []string {
		return []string{"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ENABLE=true",
			"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ADDRESS=127.0.0.1:" + strconv.Itoa(port),
			"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPEINTERVAL=1s",
			"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPETIMEOUT=5s"}
	}
	e.cloudEnv = append(e.cloudEnv,
		"KEDGE_INSTANCE__NAME=replica-a",
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG="+e.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS=127.0.0.1:"+strconv.Itoa(fwdA),
		"KEDGE_MODULES__CLOUDSTREAM__FORWARD__ENABLE=true", "KEDGE_MODULES__CLOUDSTREAM__FORWARD__ADDRESS=127.0.0.1:"+strconv.Itoa(fwdA))
	e.cloudEnv = append(e.cloudEnv, metricsEnv(metricsA)...)
	e.withStreams()

	b := start(t, "cloudcore", append([]string{
		"KEDGE_INSTANCE__NAME=replica-b",
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + e.pkiDir,
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + e.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS=127.0.0.1:" + strconv.Itoa(fwdB),
		"KEDGE_MODULES__CLOUDSTREAM__ENABLE=true",
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1",
		"KEDGE_MODULES__CLOUDSTREAM__PKIDIR=" + e.pkiDir,
		"KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG=" + e.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE=" + e.kubeletClient.CAFile,
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTALLOWEDNAMES=" + e.kubeletClient.CommonName,
		"KEDGE_MODULES__CLOUDSTREAM__FORWARD__ENABLE=true", "KEDGE_MODULES__CLOUDSTREAM__FORWARD__ADDRESS=127.0.0.1:" + strconv.Itoa(fwdB),
	}, metricsEnv(metricsB)...))
	b.waitReady()
	waitFor(t, "the tunnel on replica a only", 30*time.Second, func() (bool, string) {
		return e.cloud.metric("kedge_cloudstream_tunnels") == 1 && b.metric("kedge_cloudstream_tunnels") == 0, ""
	})

	caPEM, err := os.ReadFile(filepath.Join(e.pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
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
`, metricsB, base64.StdEncoding.EncodeToString(caPEM))), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := e.kubectlCode("apply", "-f", manifest); code != 0 {
		t.Fatalf("applying the APIService: exit %d: %s", code, out)
	}
	waitFor(t, "APIService v1beta1.metrics.k8s.io Available (replica b)", 60*time.Second, func() (bool, string) {
		out, _ := e.kubectlCode("get", "apiservice", "v1beta1.metrics.k8s.io", "-o",
			`jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`)
		return strings.HasPrefix(out, "True"), out
	})
	e.runShell("burner", "while true; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.1; done")

	waitFor(t, "kubectl top pod burner through replica b", 90*time.Second, func() (bool, string) {
		out, code := e.kubectlCode("top", "pod", "-n", e.ns)
		row := topRow(out, "burner")
		return code == 0 && row != nil && row[1] != "0m" && strings.HasSuffix(row[1], "m") && strings.HasSuffix(row[2], "Mi"), out
	})
	waitFor(t, "kubectl top node through replica b", 30*time.Second, func() (bool, string) {
		out, code := e.kubectlCode("top", "node")
		row := topRow(out, e.node)
		return code == 0 && row != nil && strings.HasSuffix(row[1], "m") && row[1] != "<unknown>", out
	})
	if v := b.metric("kedge_cloudstream_metrics_scrapes_total", `result="ok"`); v != 0 {
		t.Fatalf("replica b scraped %v times; it holds no tunnel", v)
	}
	if v := b.metric("kedge_cloudstream_metrics_peer_queries_total", `result="ok"`); v < 2 {
		t.Fatalf("replica b asked replica a %v times, want at least 2", v)
	}
}
