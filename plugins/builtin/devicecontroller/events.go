package devicecontroller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// Warning Events on a Device whose Healthy condition turns False (kubectl describe device shows
// them). At most one API write per device and reason per EventInterval: a failure reported again
// within the interval is only counted, and the next write after it adds that count to the Event's
// (so one Event object per device and reason, its count the failures seen when it was last written).

// eventComponent is the source and reporting controller of the Events.
const eventComponent = "kedge-devicecontroller"

type eventRecord struct {
	name       string    // the Event object
	last       time.Time // when it was last written
	suppressed int32     // failures since, not written yet
}

// warn records a Warning Event for dev, rate-limited per device and reason.
func (m *Module) warn(ctx context.Context, dev *v1beta1.Device, reason, msg string) {
	if m.client == nil {
		return
	}
	key := dev.Namespace + "/" + dev.Name + "/" + reason
	now := time.Now()
	m.evMu.Lock()
	rec := m.events[key]
	if rec != nil && now.Sub(rec.last) < m.EventInterval {
		rec.suppressed++
		m.evMu.Unlock()
		m.metrics.events.WithLabelValues(reason, "suppressed").Inc()
		return
	}
	add := int32(1)
	name := ""
	if rec != nil {
		add += rec.suppressed
		name = rec.name
	}
	m.evMu.Unlock()

	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	evs := m.client.CoreV1().Events(dev.Namespace)
	written := ""
	var err error
	if name != "" {
		var ev *corev1.Event
		if ev, err = evs.Get(ctx, name, metav1.GetOptions{}); err == nil {
			ev.Count += add
			ev.Message = msg
			ev.LastTimestamp = metav1.NewTime(now)
			if _, err = evs.Update(ctx, ev, metav1.UpdateOptions{}); err == nil {
				written = name
			}
		}
		if apierrors.IsNotFound(err) {
			name, err = "", nil // expired or deleted: a new one
		}
	}
	if name == "" && err == nil {
		ev := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", dev.Name, now.UnixNano()), Namespace: dev.Namespace},
			InvolvedObject: corev1.ObjectReference{Kind: "Device", APIVersion: v1beta1.GroupVersion.String(),
				Namespace: dev.Namespace, Name: dev.Name, UID: dev.UID, ResourceVersion: dev.ResourceVersion},
			Reason: reason, Message: msg, Type: corev1.EventTypeWarning, Count: add,
			Source:         corev1.EventSource{Component: eventComponent, Host: dev.Spec.NodeName},
			FirstTimestamp: metav1.NewTime(now), LastTimestamp: metav1.NewTime(now),
			ReportingController: eventComponent, ReportingInstance: eventComponent,
		}
		var got *corev1.Event
		if got, err = evs.Create(ctx, ev, metav1.CreateOptions{}); err == nil {
			written = got.Name
		}
	}
	if err != nil {
		m.metrics.events.WithLabelValues(reason, "error").Inc()
		m.host.Logger().Warn("warning event on the device not written; the next failure report tries again", "device", dev.Namespace+"/"+dev.Name, "reason", reason, "err", err)
		return
	}
	m.metrics.events.WithLabelValues(reason, "written").Inc()
	m.evMu.Lock()
	m.events[key] = &eventRecord{name: written, last: now}
	m.evMu.Unlock()
}

// forgetEvents drops a deleted device's rate-limit records.
func (m *Module) forgetEvents(ns, name string) {
	m.evMu.Lock()
	defer m.evMu.Unlock()
	for _, r := range []string{v1beta1.ReasonReadingRefused, v1beta1.ReasonDeviceOffline} {
		delete(m.events, ns+"/"+name+"/"+r)
	}
}
