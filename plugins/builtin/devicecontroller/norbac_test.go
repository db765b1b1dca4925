package devicecontroller_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// lockedBuffer is a bytes.Buffer safe for a logger and a test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// identityWithout returns a client config for a new ServiceAccount of ns bound to a ClusterRole with
// what the controller needs, except list and watch of devicestatuses (a role written before the
// DeviceStatus informer).
func identityWithout(t *testing.T, ns string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	k := ctrlrig.Env.Client
	if _, err := k.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "devicecontroller"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g := v1beta1.GroupVersion.Group
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{g}, Resources: []string{"devices", "devicemodels"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{g}, Resources: []string{"devices/status"}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{g}, Resources: []string{"devicestatuses"}, Verbs: []string{"get", "create", "update", "patch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"get", "create", "update", "patch"}},
	}}
	if _, err := k.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ns},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "devicecontroller", Namespace: ns}}}
	if _, err := k.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k.RbacV1().ClusterRoleBindings().Delete(context.Background(), ns, metav1.DeleteOptions{})
		_ = k.RbacV1().ClusterRoles().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	exp := int64(3600)
	tr, err := k.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "devicecontroller", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: ctrlrig.Env.Config.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: ctrlrig.Env.Config.CAData}}
}

// With a role that may not list and watch devicestatuses (the chart's before the DeviceStatus
// informer), the controller still starts — the refusal ends its wait for the informer at once, and
// is logged naming the permission — and mirrors as it did before the informer: it reads a Device's
// DeviceStatus before its first write, then one patch per changed report.
func TestWithoutListAndWatchOfDeviceStatusesTheMirrorReadsEachOnceAndStillWrites(t *testing.T) {
	ns := ctrlrig.Namespace(t, 45)
	var count apiCounter
	var logs lockedBuffer
	h := sdktest.Run(t, devicecontroller.InfoWithClient(count.config(identityWithout(t, ns)), nil),
		map[string]any{"kubeconfig": ctrlrig.Env.Kubeconfig, "inventoryWait": "300ms", "syncTimeout": "2m"}, sdktest.Capture("cloudhub"),
		sdktest.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	r := &rig{&ctrlrig.Rig{T: t, H: h, Hub: h.Captured("cloudhub"), NS: ns}}
	if log := logs.String(); !strings.Contains(log, "grant list and watch on devicestatuses.devices.kubeedge.io") || !strings.Contains(log, "forbidden") {
		t.Fatalf("the start did not say the DeviceStatus informer was refused; log:\n%s", log)
	}
	a := r.Node("a")
	r.join(a)
	r.model("m")
	r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, ns, "device", "d"))
	eventually(t, "DeviceStatus d created", func() (bool, string) {
		_, ok := listStatuses(t, ns)["d"]
		return ok, ""
	})
	for i := 1; i <= 2; i++ {
		if resp := r.report(a, "d", devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", fmt.Sprint(20+i), int64(1000*i))}}); resp.Route.Operation == message.OpError {
			t.Fatalf("report %d refused: %s", i, resp.Content)
		}
	}
	if got := statusTemperature(listStatuses(t, ns)["d"]); got != "22" {
		t.Fatalf("DeviceStatus d holds temperature %q; want 22", got)
	}
	if got, want := since(nil, count.snapshot(), ns), map[string]int{"GET": 1, "POST": 1, "PATCH": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("DeviceStatus requests: %v; want %v (read once, created, one patch per report)", got, want)
	}
}
