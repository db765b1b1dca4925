package devicecontroller_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// passwordIn returns configData.password of a device message's content.
func passwordIn(t *testing.T, m sdk.Message) (map[string]any, uint64) {
	t.Helper()
	var d v1beta1.Device
	if err := json.Unmarshal(m.Content, &d); err != nil {
		t.Fatalf("device content %s: %v", m.Content, err)
	}
	pw, _ := d.Spec.Protocol.ConfigData.Data["password"].(map[string]any)
	rv, _ := strconv.ParseUint(m.Header.ResourceVersion, 10, 64)
	return pw, rv
}

// A Device whose configData references a Secret key: the node it is bound to gets the key's value
// inside its copy of the Device (and no other node gets anything), the API object keeps only the
// reference (a "value" written there is dropped), a changed Secret re-sends the Device with a newer
// version and the new value, and a missing key leaves the value out with a SecretMissing Warning Event.
func TestSecretReferencedByADeviceReachesOnlyItsNodeAndFollowsChanges(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	r.model("thermo")
	ctx := context.Background()
	sec, err := ctrlrig.Env.Client.CoreV1().Secrets(r.NS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plc-login"},
		Data: map[string][]byte{"password": []byte("s3cret-1")}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := &v1beta1.Device{ObjectMeta: metav1.ObjectMeta{Name: "plc", Namespace: r.NS}, Spec: v1beta1.DeviceSpec{
		DeviceModelRef: &v1beta1.DeviceModelReference{Name: "thermo"}, NodeName: a,
		Protocol: v1beta1.ProtocolConfig{ProtocolName: "opcua", ConfigData: &v1beta1.CustomizedValue{Data: map[string]any{
			"url": "opc.tcp://plc:4840", "userName": "operator",
			"password": map[string]any{"secretKeyRef": map[string]any{"name": "plc-login", "key": "password"}, "value": "planted"}}}}}}
	if err := api.Post().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Body(d).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	// The Secret's and the Device's watches are separate streams: under load the Device may be sent
	// before the Secret is seen, and again with its value as soon as it is.
	pw, rv := r.waitDevicePassword(a, "plc", func(pw map[string]any) bool { return pw["value"] == "s3cret-1" })
	if pw["secretKeyRef"] == nil {
		t.Fatalf("node %s got password %v, want the Secret's value beside the reference", a, pw)
	}
	if held := r.get("plc"); held.Spec.Protocol.ConfigData.Data["password"].(map[string]any)["value"] != "planted" {
		t.Fatalf("the API object was changed: %v", held.Spec.Protocol.ConfigData.Data["password"])
	}
	if rv < max(rvOfString(r.get("plc").ResourceVersion), rvOfString(sec.ResourceVersion)) {
		t.Fatalf("version %d is below the Device's or the Secret's", rv)
	}

	sec.Data["password"] = []byte("s3cret-2")
	if sec, err = ctrlrig.Env.Client.CoreV1().Secrets(r.NS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pw2, rv2 := r.waitDevicePassword(a, "plc", func(pw map[string]any) bool { return pw["value"] == "s3cret-2" })
	if rv2 <= rv || rv2 != rvOfString(sec.ResourceVersion) {
		t.Fatalf("after the Secret changed: password %v version %d (was %d, Secret at %s)", pw2, rv2, rv, sec.ResourceVersion)
	}

	delete(sec.Data, "password")
	sec.Data["other"] = []byte("x")
	if _, err = ctrlrig.Env.Client.CoreV1().Secrets(r.NS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDevicePassword(a, "plc", func(pw map[string]any) bool { return pw["value"] == nil && pw["secretKeyRef"] != nil })
	eventually(t, "a SecretMissing Warning Event", func() (bool, string) {
		for _, ev := range r.warnings("plc") {
			if ev.Reason == "SecretMissing" && strings.Contains(ev.Message, `has no key "password"`) {
				return !strings.Contains(ev.Message, "s3cret"), ev.Message
			}
		}
		return false, "none"
	})
	for _, s := range r.SentTo(b) {
		if strings.Contains(s, "/device/") {
			t.Fatalf("node %s, which the device is not bound to, got %s", b, s)
		}
	}
}

// waitDevicePassword waits for a device message (insert or update) to node whose configData.password
// satisfies ok, and returns that password and the message's resourceVersion.
func (r *rig) waitDevicePassword(node, name string, ok func(map[string]any) bool) (map[string]any, uint64) {
	r.T.Helper()
	resource := res(node, r.NS, "device", name)
	about := func(m sdk.Message) bool {
		return m.Route.Resource == resource && (m.Route.Operation == message.OpInsert || m.Route.Operation == message.OpUpdate)
	}
	// The first message with the expected password: it and every earlier message about the device
	// are done with.
	m := r.TakeThrough("device message for "+r.NS+"/"+name+" to "+node+" with the expected password",
		func(m sdk.Message) bool {
			if !about(m) {
				return false
			}
			pw, _ := passwordIn(r.T, m)
			return ok(pw)
		}, about)
	return passwordIn(r.T, m)
}

func rvOfString(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}
