package dmi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
	sdkmapper "github.com/kedge-io/kedge/sdk/mapper"
	"github.com/kedge-io/kedge/sdk/message"
)

// server is DeviceManagerService.
type server struct {
	dmiv1beta1.UnimplementedDeviceManagerServiceServer
	m *Module
}

// observe counts every call by method and code.
func (m *Module) observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	m.metrics.requests.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Inc()
	return resp, err
}

// limit applies the calling mapper's rate limit. A mapper serves one protocol: MapperRegister is
// charged to the protocol it registers, reports to the protocol of the device they name.
func (m *Module) limit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var protocol string
	switch r := req.(type) {
	case *dmiv1beta1.MapperRegisterRequest:
		protocol = r.GetMapper().GetProtocol()
	case *dmiv1beta1.ReportDeviceStatusRequest:
		protocol = m.cachedProtocol(r.GetDeviceNamespace(), r.GetDeviceName())
	case *dmiv1beta1.ReportDeviceStatesRequest:
		protocol = m.cachedProtocol(r.GetDeviceNamespace(), r.GetDeviceName())
	}
	if !m.limiterFor(protocol).Allow() {
		who := "mapper of protocol " + strconv.Quote(protocol)
		if protocol == "" {
			who = "callers naming no registered protocol"
		}
		return nil, status.Errorf(codes.ResourceExhausted, "%s: over the limit of %v calls/s (burst %d); slow down and retry", who, m.QPS, m.Burst)
	}
	return handler(ctx, req)
}

func (m *Module) cachedProtocol(ns, name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, err := m.cache.find(ns, name); err == nil {
		return protocolOf(d)
	}
	return ""
}

// find looks a device up by namespace and name; without a namespace the name must be unique on the node.
func (inv *inventory) find(ns, name string) (*devicesv1beta1.Device, error) {
	if ns != "" {
		if e := inv.devices[ns+"/"+name]; e != nil {
			return e.obj, nil
		}
		return nil, status.Errorf(codes.NotFound, "device %s/%s is not on this node", ns, name)
	}
	nss := inv.byName[name]
	switch len(nss) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "device %q is not on this node", name)
	case 1:
		return inv.devices[nss[0]+"/"+name].obj, nil
	default:
		return nil, status.Errorf(codes.FailedPrecondition, "device name %q is in namespaces %s on this node; set deviceNamespace", name, strings.Join(nss, ", "))
	}
}

// device finds a device; a miss re-lists from metamanager once (the device may have just arrived).
// Twin topics carry the name only, so a name held in two namespaces is refused.
func (m *Module) device(ctx context.Context, ns, name string) (*devicesv1beta1.Device, error) {
	m.mu.Lock()
	d, err := m.cache.find(ns, name)
	m.mu.Unlock()
	if status.Code(err) == codes.NotFound {
		if rerr := m.refresh(ctx); rerr != nil {
			return nil, status.Errorf(codes.Unavailable, "device %q not known yet and the device list could not be read: %v", name, rerr)
		}
		m.mu.Lock()
		d, err = m.cache.find(ns, name)
		m.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	ambiguous := len(m.cache.byName[name]) > 1
	nss := slices.Clone(m.cache.byName[name])
	m.mu.Unlock()
	if ambiguous {
		return nil, status.Errorf(codes.FailedPrecondition, "device name %q is in namespaces %s on this node; device twin topics need it unique", name, strings.Join(nss, ", "))
	}
	return d, nil
}

func (s *server) MapperRegister(ctx context.Context, req *dmiv1beta1.MapperRegisterRequest) (*dmiv1beta1.MapperRegisterResponse, error) {
	mi := req.GetMapper()
	switch {
	case mi == nil:
		return nil, status.Error(codes.InvalidArgument, "MapperRegister: mapper is missing (want name, protocol and address)")
	case mi.GetName() == "":
		return nil, status.Error(codes.InvalidArgument, "MapperRegister: mapper.name is empty")
	case mi.GetProtocol() == "":
		return nil, status.Errorf(codes.InvalidArgument, "MapperRegister: mapper %q: protocol is empty (devices are matched on spec.protocol.protocolName)", mi.GetName())
	case socketPath(mi.GetAddress()) == "":
		return nil, status.Errorf(codes.InvalidArgument, "MapperRegister: mapper %q: address is empty (want the unix socket of its DeviceMapperService)", mi.GetName())
	case !strings.HasPrefix(socketPath(mi.GetAddress()), "/"):
		return nil, status.Errorf(codes.InvalidArgument, "MapperRegister: mapper %q: address %q is not an absolute unix socket path", mi.GetName(), mi.GetAddress())
	}
	resp, err := s.m.register(ctx, mi, req.GetWithData())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "MapperRegister: mapper %q: %v", mi.GetName(), err)
	}
	return resp, nil
}

// The payload shapes devicetwin takes on its MQTT topics (KubeEdge's).
type twinValue struct {
	Value    string     `json:"value"`
	Metadata *valueMeta `json:"metadata,omitempty"`
}

type valueMeta struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

type msgTwin struct {
	Actual   *twinValue `json:"actual,omitempty"`
	Metadata *typeMeta  `json:"metadata,omitempty"`
}

type typeMeta struct {
	Type string `json:"type,omitempty"`
}

type twinUpdate struct {
	EventID   string              `json:"event_id"`
	Timestamp int64               `json:"timestamp"`
	Twin      map[string]*msgTwin `json:"twin"`
}

type stateUpdate struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
	State     string `json:"state"`
	// PropertyErrors are the failing properties the mapper sent along (properrors.go; a Kedge
	// addition to the state/update payload): nil when it sent none, empty when none fails.
	PropertyErrors *map[string]sdkmapper.PropertyError `json:"property_errors,omitempty"`
	// OfflineReason is why the mapper says the device is offline (properrors.go; a Kedge addition):
	// nil when it sent none, empty when it gave no reason.
	OfflineReason *sdkmapper.OfflineReason `json:"offline_reason,omitempty"`
}

func (s *server) ReportDeviceStatus(ctx context.Context, req *dmiv1beta1.ReportDeviceStatusRequest) (*dmiv1beta1.ReportDeviceStatusResponse, error) {
	name := req.GetDeviceName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "ReportDeviceStatus: deviceName is empty")
	}
	twins := req.GetReportedDevice().GetTwins()
	if len(twins) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStatus: device %q: reportedDevice has no twins", name)
	}
	d, err := s.m.device(ctx, req.GetDeviceNamespace(), name)
	if err != nil {
		return nil, err
	}
	// Properties are checked against the device's model (as devicetwin does); without the model yet,
	// devicetwin refuses the update itself.
	var props map[string]bool
	s.m.mu.Lock()
	if me := s.m.cache.models[d.Namespace+"/"+modelRef(d)]; me != nil {
		props = map[string]bool{}
		for _, p := range me.obj.Spec.Properties {
			props[p.Name] = true
		}
	}
	s.m.mu.Unlock()
	upd := twinUpdate{EventID: message.NewID(), Timestamp: time.Now().UnixMilli(), Twin: map[string]*msgTwin{}}
	for i, t := range twins {
		p := t.GetPropertyName()
		switch {
		case p == "":
			return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStatus: device %q: twins[%d] has no propertyName", name, i)
		case props != nil && !props[p]:
			return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStatus: device %q: property %q is not in its model %q", name, p, modelRef(d))
		case t.GetReported() == nil:
			return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStatus: device %q property %q: no reported value", name, p)
		}
		tw := &msgTwin{Actual: &twinValue{Value: t.GetReported().GetValue()}}
		md := t.GetReported().GetMetadata()
		if ts := md["timestamp"]; ts != "" {
			n, err := strconv.ParseInt(ts, 10, 64)
			if err != nil || n < 0 {
				return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStatus: device %q property %q: metadata.timestamp %q is not milliseconds since the epoch", name, p, ts)
			}
			tw.Actual.Metadata = &valueMeta{Timestamp: n}
		}
		if typ := md["type"]; typ != "" {
			tw.Metadata = &typeMeta{Type: strings.ToLower(typ)}
		}
		upd.Twin[p] = tw
	}
	if err := s.m.publish(ctx, "$hw/events/device/"+name+"/twin/update", upd); err != nil {
		return nil, err
	}
	return &dmiv1beta1.ReportDeviceStatusResponse{}, nil
}

// mapperStates maps the states KubeEdge's mapper framework reports onto the ones devicetwin keeps.
var mapperStates = map[string]string{
	"online": "online", "ok": "online",
	"offline": "offline", "disconnected": "offline",
	"unknown": "unknown", "unhealthy": "unknown",
}

func (s *server) ReportDeviceStates(ctx context.Context, req *dmiv1beta1.ReportDeviceStatesRequest) (*dmiv1beta1.ReportDeviceStatesResponse, error) {
	name := req.GetDeviceName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "ReportDeviceStates: deviceName is empty")
	}
	state, ok := mapperStates[strings.ToLower(strings.TrimSpace(req.GetState()))]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: state %q is not one of online, offline, unknown (or ok, disconnected, unhealthy)", name, req.GetState())
	}
	if _, err := s.m.device(ctx, req.GetDeviceNamespace(), name); err != nil {
		return nil, err
	}
	perrs, err := propertyErrors(ctx, name)
	if err != nil {
		return nil, err
	}
	why, err := offlineReason(ctx, name)
	if err != nil {
		return nil, err
	}
	upd := stateUpdate{EventID: message.NewID(), Timestamp: time.Now().UnixMilli(), State: state, PropertyErrors: perrs, OfflineReason: why}
	if err := s.m.publish(ctx, "$hw/events/device/"+name+"/state/update", upd); err != nil {
		return nil, err
	}
	return &dmiv1beta1.ReportDeviceStatesResponse{}, nil
}

// publish hands devicetwin a payload as eventbus hands it an MQTT message: operation publish, group
// bus, resource = the topic. It is a sync request: devicetwin replies once the value is committed to
// its store (or refused), so a successful call means the value survives a crash. A full mailbox holds
// the call (back-pressure); callTimeout (or the call's own deadline) bounds the whole wait.
func (m *Module) publish(ctx context.Context, topic string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return status.Errorf(codes.Internal, "encode %s: %v", topic, err)
	}
	msg := message.New(Name, "bus", message.OpPublish, topic)
	msg.Content = raw
	timeout := m.CallTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	reply, err := m.host.SendSync(ctx, m.DeviceTwin, msg, timeout)
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return status.Errorf(codes.DeadlineExceeded, "%s did not confirm %s within %s: the value may not be stored", m.DeviceTwin, topic, timeout)
		}
		return status.Errorf(codes.Unavailable, "%s not reachable: %v", m.DeviceTwin, err)
	}
	if reply.Route.Operation == message.OpError {
		return status.Errorf(codes.Unavailable, "%s did not store %s: %s", m.DeviceTwin, topic, reply.Content)
	}
	var answer struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(reply.Content, &answer); err != nil {
		return status.Errorf(codes.Internal, "%s answered %s with %s: %v", m.DeviceTwin, topic, reply.Content, err)
	}
	switch {
	case answer.Code == 0 || answer.Code == http.StatusOK:
		return nil
	case answer.Code == http.StatusNotFound:
		return status.Error(codes.NotFound, answer.Reason)
	case answer.Code == http.StatusForbidden:
		return status.Error(codes.PermissionDenied, answer.Reason)
	case answer.Code == http.StatusConflict:
		return status.Error(codes.FailedPrecondition, answer.Reason)
	case answer.Code >= 400 && answer.Code < 500:
		return status.Error(codes.InvalidArgument, answer.Reason)
	}
	return status.Errorf(codes.Internal, "%s: %s", m.DeviceTwin, answer.Reason)
}
