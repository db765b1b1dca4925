package dmi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// inventory is the node's devices and device models as metamanager last listed them.
type inventory struct {
	devices map[string]*entry[devicesv1beta1.Device]      // ns/name
	models  map[string]*entry[devicesv1beta1.DeviceModel] // ns/name
	byName  map[string][]string                           // device name -> namespaces
}

type entry[T any] struct {
	obj *T
	sum [32]byte // of the stored JSON: a change means the mapper gets an update
}

func newInventory() *inventory {
	return &inventory{devices: map[string]*entry[devicesv1beta1.Device]{}, models: map[string]*entry[devicesv1beta1.DeviceModel]{}, byName: map[string][]string{}}
}

// list asks metamanager for every object of a type (`*/<type>`: all namespaces).
func (m *Module) list(ctx context.Context, typ string) ([]json.RawMessage, error) {
	q := message.New(Name, "resource", message.OpQuery, "*/"+typ)
	reply, err := m.host.SendSync(ctx, m.MetaManager, q, m.CallTimeout)
	if err != nil {
		return nil, fmt.Errorf("query %s from %s: %w", q.Route.Resource, m.MetaManager, err)
	}
	if reply.Route.Operation == message.OpError {
		return nil, fmt.Errorf("query %s: %s refused: %s", q.Route.Resource, m.MetaManager, reply.Content)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(reply.Content, &items); err != nil {
		return nil, fmt.Errorf("query %s: unreadable answer: %w", q.Route.Resource, err)
	}
	return items, nil
}

// refresh replaces the cached inventory with metamanager's lists.
func (m *Module) refresh(ctx context.Context) error {
	devs, err := m.list(ctx, "device")
	if err != nil {
		return err
	}
	mods, err := m.list(ctx, "devicemodel")
	if err != nil {
		return err
	}
	inv := newInventory()
	for _, raw := range mods {
		var dm devicesv1beta1.DeviceModel
		if err := json.Unmarshal(raw, &dm); err != nil || dm.Name == "" {
			m.log.Warn("device model from metamanager unreadable; skipped", "err", err)
			continue
		}
		inv.models[dm.Namespace+"/"+dm.Name] = &entry[devicesv1beta1.DeviceModel]{obj: &dm, sum: sha256.Sum256(raw)}
	}
	for _, raw := range devs {
		var d devicesv1beta1.Device
		if err := json.Unmarshal(raw, &d); err != nil || d.Name == "" {
			m.log.Warn("device from metamanager unreadable; skipped", "err", err)
			continue
		}
		inv.devices[d.Namespace+"/"+d.Name] = &entry[devicesv1beta1.Device]{obj: &d, sum: sha256.Sum256(raw)}
		inv.byName[d.Name] = append(inv.byName[d.Name], d.Namespace)
	}
	for _, nss := range inv.byName {
		slices.Sort(nss)
	}
	m.mu.Lock()
	m.cache = inv
	m.mu.Unlock()
	return nil
}

// protocolOf is the protocol a device is served by (spec.protocol.protocolName).
func protocolOf(d *devicesv1beta1.Device) string { return d.Spec.Protocol.ProtocolName }

func modelRef(d *devicesv1beta1.Device) string {
	if d.Spec.DeviceModelRef == nil {
		return ""
	}
	return d.Spec.DeviceModelRef.Name
}

// forProtocol returns the devices of a protocol and the models they use or that name the protocol,
// keyed ns/name, with their checksums.
func (inv *inventory) forProtocol(protocol string) (devs map[string]*entry[devicesv1beta1.Device], mods map[string]*entry[devicesv1beta1.DeviceModel]) {
	devs, mods = map[string]*entry[devicesv1beta1.Device]{}, map[string]*entry[devicesv1beta1.DeviceModel]{}
	for k, e := range inv.devices {
		if protocolOf(e.obj) != protocol {
			continue
		}
		devs[k] = e
		if ref := modelRef(e.obj); ref != "" {
			if me := inv.models[e.obj.Namespace+"/"+ref]; me != nil {
				mods[e.obj.Namespace+"/"+ref] = me
			}
		}
	}
	for k, e := range inv.models {
		if e.obj.Spec.Protocol == protocol {
			mods[k] = e
		}
	}
	return devs, mods
}

// --- conversion to the DMI messages ---

func toDMIDevice(d *devicesv1beta1.Device) (*dmiv1beta1.Device, error) {
	out := &dmiv1beta1.Device{Name: d.Name, Namespace: d.Namespace, Spec: &dmiv1beta1.DeviceSpec{DeviceModelReference: modelRef(d)}}
	cfg, err := toCustomized(d.Spec.Protocol.ConfigData)
	if err != nil {
		return nil, fmt.Errorf("device %s/%s spec.protocol.configData: %w", d.Namespace, d.Name, err)
	}
	out.Spec.Protocol = &dmiv1beta1.ProtocolConfig{ProtocolName: d.Spec.Protocol.ProtocolName, ConfigData: cfg}
	for _, p := range d.Spec.Properties {
		vcfg, err := toCustomized(p.Visitors.ConfigData)
		if err != nil {
			return nil, fmt.Errorf("device %s/%s property %q visitors.configData: %w", d.Namespace, d.Name, p.Name, err)
		}
		push, err := toPushMethod(p.PushMethod)
		if err != nil {
			return nil, fmt.Errorf("device %s/%s property %q pushMethod: %w", d.Namespace, d.Name, p.Name, err)
		}
		out.Spec.Properties = append(out.Spec.Properties, &dmiv1beta1.DeviceProperty{
			Name:          p.Name,
			Desired:       &dmiv1beta1.TwinProperty{Value: p.Desired.Value, Metadata: p.Desired.Metadata},
			Visitors:      &dmiv1beta1.VisitorConfig{ProtocolName: p.Visitors.ProtocolName, ConfigData: vcfg},
			ReportCycle:   p.ReportCycle,
			CollectCycle:  p.CollectCycle,
			ReportToCloud: p.ReportToCloud,
			PushMethod:    push,
		})
	}
	for _, mt := range d.Spec.Methods {
		out.Spec.Methods = append(out.Spec.Methods, &dmiv1beta1.DeviceMethod{Name: mt.Name, Description: mt.Description, PropertyNames: mt.PropertyNames})
	}
	// The DMI DeviceStatus carries the state report settings (KubeEdge fills them from
	// spec.stateReport): a mapper calls ReportDeviceStates only when reportToCloud says so.
	if sr := d.Spec.StateReport; sr != nil || len(d.Status.Twins) > 0 {
		out.Status = &dmiv1beta1.DeviceStatus{}
		if sr != nil {
			out.Status.ReportToCloud, out.Status.ReportCycle = sr.ReportToCloud, sr.ReportCycle
		}
		for _, t := range d.Status.Twins {
			out.Status.Twins = append(out.Status.Twins, &dmiv1beta1.Twin{
				PropertyName:    t.PropertyName,
				Reported:        &dmiv1beta1.TwinProperty{Value: t.Reported.Value, Metadata: t.Reported.Metadata},
				ObservedDesired: &dmiv1beta1.TwinProperty{Value: t.ObservedDesired.Value, Metadata: t.ObservedDesired.Metadata},
			})
		}
	}
	return out, nil
}

func toDMIModel(dm *devicesv1beta1.DeviceModel) *dmiv1beta1.DeviceModel {
	out := &dmiv1beta1.DeviceModel{Name: dm.Name, Namespace: dm.Namespace, Spec: &dmiv1beta1.DeviceModelSpec{}}
	for _, p := range dm.Spec.Properties {
		out.Spec.Properties = append(out.Spec.Properties, &dmiv1beta1.ModelProperty{
			Name: p.Name, Description: p.Description, Type: string(p.Type), AccessMode: string(p.AccessMode),
			Minimum: p.Minimum, Maximum: p.Maximum, Unit: p.Unit,
		})
	}
	return out
}

func toPushMethod(p *devicesv1beta1.PushMethod) (*dmiv1beta1.PushMethod, error) {
	if p == nil {
		return nil, nil
	}
	out := &dmiv1beta1.PushMethod{}
	if h := p.HTTP; h != nil {
		out.Http = &dmiv1beta1.PushMethodHTTP{Hostname: h.HostName, Port: h.Port, Requestpath: h.RequestPath, Timeout: h.Timeout}
	}
	if q := p.MQTT; q != nil {
		out.Mqtt = &dmiv1beta1.PushMethodMQTT{Address: q.Address, Topic: q.Topic, Qos: int32(q.QoS), Retained: q.Retained}
	}
	if o := p.OTEL; o != nil {
		out.Otel = &dmiv1beta1.PushMethodOTEL{EndpointURL: o.EndpointURL}
	}
	if db := p.DBMethod; db != nil {
		out.DbMethod = &dmiv1beta1.DBMethod{}
		if i := db.Influxdb2; i != nil {
			out.DbMethod.Influxdb2 = &dmiv1beta1.DBMethodInfluxdb2{}
			if c := i.Influxdb2ClientConfig; c != nil {
				out.DbMethod.Influxdb2.Influxdb2ClientConfig = &dmiv1beta1.Influxdb2ClientConfig{Url: c.URL, Org: c.Org, Bucket: c.Bucket}
			}
			if c := i.Influxdb2DataConfig; c != nil {
				out.DbMethod.Influxdb2.Influxdb2DataConfig = &dmiv1beta1.Influxdb2DataConfig{Measurement: c.Measurement, Tag: c.Tag, FieldKey: c.FieldKey}
			}
		}
		if r := db.Redis; r != nil && r.RedisClientConfig != nil {
			c := r.RedisClientConfig
			out.DbMethod.Redis = &dmiv1beta1.DBMethodRedis{RedisClientConfig: &dmiv1beta1.RedisClientConfig{
				Addr: c.Addr, Db: int32(c.DB), Poolsize: int32(c.Poolsize), MinIdleConns: int32(c.MinIdleConns)}}
		}
		if t := db.TDEngine; t != nil && t.TDEngineClientConfig != nil {
			out.DbMethod.Tdengine = &dmiv1beta1.DBMethodTDEngine{TdEngineClientConfig: &dmiv1beta1.TDEngineClientConfig{
				Addr: t.TDEngineClientConfig.Addr, Dbname: t.TDEngineClientConfig.DBName}}
		}
		if s := db.MySQL; s != nil && s.MySQLClientConfig != nil {
			c := s.MySQLClientConfig
			out.DbMethod.Mysql = &dmiv1beta1.DBMethodMySQL{MysqlClientConfig: &dmiv1beta1.MySQLClientConfig{Addr: c.Addr, Database: c.Database, UserName: c.UserName}}
		}
	}
	if a := p.AnomalyDetection; a != nil {
		cv, err := toCustomized(a)
		if err != nil {
			return nil, fmt.Errorf("anomalyDetection: %w", err)
		}
		out.AnomalyDetection = &dmiv1beta1.AnomalyDetection{}
		if cv != nil {
			out.AnomalyDetection.Data = cv.Data
		}
	}
	return out, nil
}

// toCustomized packs free-form configuration: strings, whole numbers, other numbers and booleans as
// the matching well-known wrapper; objects and lists as a StringValue holding their JSON.
func toCustomized(c *devicesv1beta1.CustomizedValue) (*dmiv1beta1.CustomizedValue, error) {
	if c == nil || len(c.Data) == 0 {
		return nil, nil
	}
	out := &dmiv1beta1.CustomizedValue{Data: make(map[string]*anypb.Any, len(c.Data))}
	for k, v := range c.Data {
		var a *anypb.Any
		var err error
		switch t := v.(type) {
		case string:
			a, err = anypb.New(wrapperspb.String(t))
		case bool:
			a, err = anypb.New(wrapperspb.Bool(t))
		case float64:
			if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
				a, err = anypb.New(wrapperspb.Int64(int64(t)))
			} else {
				a, err = anypb.New(wrapperspb.Double(t))
			}
		case int64:
			a, err = anypb.New(wrapperspb.Int64(t))
		case int:
			a, err = anypb.New(wrapperspb.Int64(int64(t)))
		case nil:
			continue
		default:
			raw, jerr := json.Marshal(t)
			if jerr != nil {
				return nil, fmt.Errorf("key %q: %w", k, jerr)
			}
			a, err = anypb.New(wrapperspb.String(string(raw)))
		}
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out.Data[k] = a
	}
	return out, nil
}

// socketPath takes a mapper's address: a path, or unix://<path>.
func socketPath(addr []byte) string {
	s := strings.TrimSpace(string(addr))
	s = strings.TrimPrefix(s, "unix://")
	return s
}
