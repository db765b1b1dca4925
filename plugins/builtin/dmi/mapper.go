package dmi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kedge-io/kedge/sdk"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// mapper is one registered mapper: its DeviceMapperService client, its rate limit and what it was
// given (ns/name -> checksum of the object sent).
type mapper struct {
	info   *dmiv1beta1.MapperInfo
	socket string
	conn   *grpc.ClientConn
	client dmiv1beta1.DeviceMapperServiceClient

	syncMu sync.Mutex // one reconcile of this mapper at a time
	devs   map[string][32]byte
	mods   map[string][32]byte
}

func (mp *mapper) close() {
	if mp.conn != nil {
		_ = mp.conn.Close()
	}
}

func dialMapper(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// limiterFor is the rate limiter of the mapper serving a protocol (made at its first call);
// calls naming a device no one knows share the limiter of key "".
func (m *Module) limiterFor(protocol string) *rate.Limiter {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.limiters[protocol]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(m.QPS), m.Burst)
		m.limiters[protocol] = l
	}
	return l
}

func (m *Module) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(m.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
		if err := m.refresh(ctx); err != nil {
			if ctx.Err() == nil {
				m.log.Warn("reconcile: devices not listed; mappers keep what they have", "err", err)
			}
			continue
		}
		m.syncAll(ctx)
	}
}

// syncAll brings every registered mapper in step with the cached inventory.
func (m *Module) syncAll(ctx context.Context) {
	m.mu.Lock()
	mps := make([]*mapper, 0, len(m.mappers))
	for _, mp := range m.mappers {
		mps = append(mps, mp)
	}
	m.mu.Unlock()
	for _, mp := range mps {
		m.syncMapper(ctx, mp)
	}
}

// syncMapper sends a mapper what changed for its protocol: new models, then new and changed devices,
// then removed devices, then removed models. A failed call is retried at the next reconcile.
func (m *Module) syncMapper(ctx context.Context, mp *mapper) {
	mp.syncMu.Lock()
	defer mp.syncMu.Unlock()
	m.mu.Lock()
	devs, mods := m.cache.forProtocol(mp.info.Protocol)
	m.mu.Unlock()
	changed := false
	defer func() {
		if changed {
			m.persist(ctx, mp)
		}
	}()
	call := func(method string, fn func(ctx context.Context) error) bool {
		cctx, cancel := context.WithTimeout(ctx, m.CallTimeout)
		defer cancel()
		err := fn(cctx)
		result := "ok"
		if err == nil {
			changed = true
		} else {
			result = "error"
			if ctx.Err() == nil {
				m.log.Warn("mapper call failed; retried at the next reconcile", "mapper", mp.info.Name, "method", method, "err", err)
			}
		}
		m.metrics.mapperCalls.WithLabelValues(method, result).Inc()
		return err == nil
	}
	for k, e := range mods {
		old, had := mp.mods[k]
		if had && old == e.sum {
			continue
		}
		model := toDMIModel(e.obj)
		if !had {
			if call("CreateDeviceModel", func(ctx context.Context) error {
				_, err := mp.client.CreateDeviceModel(ctx, &dmiv1beta1.CreateDeviceModelRequest{Model: model})
				return err
			}) {
				mp.mods[k] = e.sum
			}
			continue
		}
		if call("UpdateDeviceModel", func(ctx context.Context) error {
			_, err := mp.client.UpdateDeviceModel(ctx, &dmiv1beta1.UpdateDeviceModelRequest{Model: model})
			return err
		}) {
			mp.mods[k] = e.sum
		}
	}
	for k, e := range devs {
		old, had := mp.devs[k]
		if had && old == e.sum {
			continue
		}
		dev, err := toDMIDevice(e.obj)
		if err != nil {
			m.log.Warn("device not sent to its mapper", "mapper", mp.info.Name, "err", err)
			continue
		}
		if !had {
			if call("RegisterDevice", func(ctx context.Context) error {
				_, err := mp.client.RegisterDevice(ctx, &dmiv1beta1.RegisterDeviceRequest{Device: dev})
				return err
			}) {
				mp.devs[k] = e.sum
			}
			continue
		}
		if call("UpdateDevice", func(ctx context.Context) error {
			_, err := mp.client.UpdateDevice(ctx, &dmiv1beta1.UpdateDeviceRequest{Device: dev})
			return err
		}) {
			mp.devs[k] = e.sum
		}
	}
	for k := range mp.devs {
		if _, ok := devs[k]; ok {
			continue
		}
		ns, name := splitKey(k)
		if call("RemoveDevice", func(ctx context.Context) error {
			_, err := mp.client.RemoveDevice(ctx, &dmiv1beta1.RemoveDeviceRequest{DeviceName: name, DeviceNamespace: ns})
			return err
		}) {
			delete(mp.devs, k)
		}
	}
	for k := range mp.mods {
		if _, ok := mods[k]; ok {
			continue
		}
		ns, name := splitKey(k)
		if call("RemoveDeviceModel", func(ctx context.Context) error {
			_, err := mp.client.RemoveDeviceModel(ctx, &dmiv1beta1.RemoveDeviceModelRequest{ModelName: name, ModelNamespace: ns})
			return err
		}) {
			delete(mp.mods, k)
		}
	}
}

func splitKey(k string) (ns, name string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

// register records a mapper (replacing an earlier registration of its protocol) and returns what it
// serves. With withData the mapper is taken to hold those objects now; without, the next reconcile
// sends them.
func (m *Module) register(ctx context.Context, info *dmiv1beta1.MapperInfo, withData bool) (*dmiv1beta1.MapperRegisterResponse, error) {
	socket := socketPath(info.Address)
	conn, err := dialMapper(socket)
	if err != nil {
		return nil, fmt.Errorf("mapper %q address %q: %w", info.Name, socket, err)
	}
	if err := m.refresh(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	mp := &mapper{info: info, socket: socket, conn: conn, client: dmiv1beta1.NewDeviceMapperServiceClient(conn),
		devs: map[string][32]byte{}, mods: map[string][32]byte{}}
	resp := &dmiv1beta1.MapperRegisterResponse{}
	m.mu.Lock()
	devs, mods := m.cache.forProtocol(info.Protocol)
	old := m.mappers[info.Protocol]
	m.mappers[info.Protocol] = mp
	n := len(m.mappers)
	m.mu.Unlock()
	m.metrics.mappers.Set(float64(n))
	if old != nil {
		old.close()
	}
	mp.syncMu.Lock()
	defer mp.syncMu.Unlock()
	if withData {
		for k, e := range mods {
			resp.ModelList = append(resp.ModelList, toDMIModel(e.obj))
			mp.mods[k] = e.sum
		}
		for k, e := range devs {
			d, err := toDMIDevice(e.obj)
			if err != nil {
				m.log.Warn("device not given to its mapper", "mapper", info.Name, "err", err)
				continue
			}
			resp.DeviceList = append(resp.DeviceList, d)
			mp.devs[k] = e.sum
		}
	} else {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	// Kept in the store, as KubeEdge keeps registrations in its database: a mapper registers once at
	// its start, so after an edgecore restart it is served from this record.
	m.persist(ctx, mp)
	m.log.Info("mapper registered", "mapper", info.Name, "protocol", info.Protocol, "socket", socket,
		"version", info.Version, "devices", len(devs), "models", len(mods), "withData", withData)
	return resp, nil
}

// registration is what dmi keeps of a mapper in its store (type "mapper", name = its protocol): the
// MapperInfo it registered and what it was given (ns/name -> hex sha256 of the stored object).
type registration struct {
	Mapper  json.RawMessage   `json:"mapper"` // protojson of MapperInfo
	Devices map[string]string `json:"devices"`
	Models  map[string]string `json:"models"`
}

const registrationType = "mapper"

// persist writes a mapper's registration and what it holds (the caller holds mp.syncMu). A failed
// write is logged: the mapper is still served until edgecore stops.
func (m *Module) persist(ctx context.Context, mp *mapper) {
	info, err := protojson.Marshal(mp.info)
	if err != nil {
		m.log.Error("mapper registration not stored", "mapper", mp.info.Name, "err", err)
		return
	}
	reg := registration{Mapper: info, Devices: make(map[string]string, len(mp.devs)), Models: make(map[string]string, len(mp.mods))}
	for k, v := range mp.devs {
		reg.Devices[k] = hex.EncodeToString(v[:])
	}
	for k, v := range mp.mods {
		reg.Models[k] = hex.EncodeToString(v[:])
	}
	raw, err := json.Marshal(reg)
	if err != nil {
		m.log.Error("mapper registration not stored", "mapper", mp.info.Name, "err", err)
		return
	}
	if _, err := m.host.Store().Put(context.WithoutCancel(ctx), sdk.Object{Key: sdk.Key{Type: registrationType, Name: mp.info.Protocol}, Value: raw}); err != nil {
		m.log.Error("mapper registration not stored; it is lost if edgecore restarts before the mapper registers again", "mapper", mp.info.Name, "err", err)
	}
}

// restore serves again the mappers registered before edgecore (re)started. A record that does not
// read back is logged and dropped: that mapper has to register again.
func (m *Module) restore(ctx context.Context) error {
	objs, err := m.host.Store().List(ctx, sdk.Query{Type: registrationType})
	if err != nil {
		return fmt.Errorf("list stored mapper registrations: %w", err)
	}
	for _, o := range objs {
		var reg registration
		info := &dmiv1beta1.MapperInfo{}
		if err := json.Unmarshal(o.Value, &reg); err == nil {
			err = protojson.Unmarshal(reg.Mapper, info)
		}
		mp, perr := func() (*mapper, error) {
			if err != nil {
				return nil, err
			}
			mp := &mapper{info: info, socket: socketPath(info.Address), devs: map[string][32]byte{}, mods: map[string][32]byte{}}
			if err := unhexSums(reg.Devices, mp.devs); err != nil {
				return nil, err
			}
			if err := unhexSums(reg.Models, mp.mods); err != nil {
				return nil, err
			}
			conn, err := dialMapper(mp.socket)
			if err != nil {
				return nil, err
			}
			mp.conn, mp.client = conn, dmiv1beta1.NewDeviceMapperServiceClient(conn)
			return mp, nil
		}()
		if perr != nil {
			m.log.Warn("stored mapper registration unreadable; dropped (the mapper must register again)", "protocol", o.Name, "err", perr)
			_, _ = m.host.Store().Delete(ctx, o.Key)
			continue
		}
		m.mu.Lock()
		m.mappers[info.Protocol] = mp
		m.mu.Unlock()
		m.log.Info("mapper registration restored", "mapper", info.Name, "protocol", info.Protocol, "socket", mp.socket,
			"devices", len(mp.devs), "models", len(mp.mods))
	}
	m.mu.Lock()
	n := len(m.mappers)
	m.mu.Unlock()
	m.metrics.mappers.Set(float64(n))
	return nil
}

func unhexSums(in map[string]string, out map[string][32]byte) error {
	for k, v := range in {
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != 32 {
			return fmt.Errorf("checksum of %s: %q is not a hex sha256", k, v)
		}
		out[k] = [32]byte(b)
	}
	return nil
}
