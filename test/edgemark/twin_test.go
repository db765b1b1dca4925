package edgemark_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/test/edgemark"
)

// TestHollowNodesTwinReportsReachTheirDevices runs hollow nodes with device traffic against
// cloudhub, edgecontroller and devicecontroller: each node reports the temperature twin of the Device
// bound to it every second; every Device's status must show a reported value from its node, the
// cloud must acknowledge the reports, and refuse none.
func TestHollowNodesTwinReportsReachTheirDevices(t *testing.T) {
	if env == nil {
		t.Skip("needs the control plane (not with -short)")
	}
	const nodes = 20
	run := runs.Add(1) // its own namespace and node names under -count
	prefix, ns := fmt.Sprintf("twin%d", run), fmt.Sprintf("edgemark-twin-%d", run)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = edgemark.NodeName(prefix, i)
	}
	if err := edgemark.CreateDevices(ctx, env.Config, ns, names, 8); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cloud, err := edgemark.StartCloud(ctx, edgemark.CloudOptions{Dir: dir, Kubeconfig: env.Kubeconfig, Devices: true,
		Configure: func(h *cloudhub.Module, c *edgecontroller.Module) { c.SendServices = false }})
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Stop()
	tok, err := cloud.Hub.CreateToken(ctx, pki.TokenOptions{TTL: time.Hour, Uses: nodes})
	if err != nil {
		t.Fatal(err)
	}
	deleteNodesAtEnd(t, prefix, nodes)
	sim, err := edgemark.Start(ctx, edgemark.Options{HubAddress: cloud.Hub.Address, CertServer: cloud.Hub.CertServerAddress,
		Tokens: []string{tok.String()}, CertDir: dir + "/nodes", Nodes: nodes, Prefix: prefix, Rate: 50,
		StatusPeriod: 10 * time.Second, TwinPeriod: time.Second, TwinNamespace: ns, AckTimeout: 10 * time.Second,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	dc, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	devices := dc.Resource(schema.GroupVersionResource{Group: v1beta1.GroupVersion.Group, Version: v1beta1.GroupVersion.Version, Resource: v1beta1.ResourceDevices}).Namespace(ns)
	waitFor(t, sim, "every Device showing a reported temperature from its node", func() (string, bool) {
		list, err := devices.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error(), false
		}
		reported := 0
		for _, d := range list.Items {
			if reportedValue(d, edgemark.TwinProperty) != "" {
				reported++
			}
		}
		st := sim.Stats()
		return fmt.Sprintf("%d/%d Devices reported; twins sent %d acked %d, refused %d", reported, nodes, st.TwinsSent, st.TwinsAcked, st.Refused),
			reported == nodes && st.TwinsAcked >= nodes
	})
	if st := sim.Stats(); st.Refused != 0 {
		t.Fatalf("the cloud refused %d upstream messages: %s", st.Refused, st)
	}
}

func reportedValue(d unstructured.Unstructured, property string) string {
	twins, _, _ := unstructured.NestedSlice(d.Object, "status", "twins")
	for _, tw := range twins {
		m, ok := tw.(map[string]any)
		if !ok || m["propertyName"] != property {
			continue
		}
		v, _, _ := unstructured.NestedString(m, "reported", "value")
		return v
	}
	return ""
}
