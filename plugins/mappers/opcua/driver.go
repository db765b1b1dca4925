package opcua

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/kedge-io/kedge/sdk/mapper"
)

// Driver serves one OPC-UA device: one client session to its server, and (by default) one
// subscription whose monitored items keep the latest value of each property's node, so reads are
// answered from what the server pushed instead of a Read call per cycle.
type Driver struct {
	device mapper.DeviceRef
	cfg    ProtocolConfig
	c      *opcua.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	sub      *opcua.Subscription
	items    map[string]*item // node id → its monitored item
	handles  map[uint32]*item
	next     uint32
	types    map[string]ua.TypeID // node id → its value's type, for writes
	visitors map[string]Visitor   // visitor text → parsed (a browse path: resolved to its node)

	stats     driverStats   // metrics.go
	stateStop chan struct{} // ends watchState
}

type item struct {
	node *ua.NodeID
	// what the server granted for the item (metrics.go)
	revisedSampling time.Duration
	revisedQueue    uint32
	value           *ua.Variant // the latest value
	status          ua.StatusCode
	has             bool
	changes         []change      // notified and not yet read, oldest first (at most maxQueued)
	dropped         uint64        // changes dropped because reads fell maxQueued behind
	ready           chan struct{} // closed at the first notification (the item's initial sample)
}

type change struct {
	value  *ua.Variant
	status ua.StatusCode
}

// maxQueued bounds the changes kept per node between reads: every change the server publishes is
// read once, in order, unless reads fall this far behind (then the oldest go, counted).
const maxQueued = 256

var (
	_ mapper.Driver          = (*Driver)(nil)
	_ mapper.PropertyChecker = (*Driver)(nil)
)

// NewDriver returns a driver for one OPC-UA device.
func NewDriver() mapper.Driver { return &Driver{} }

// Init discovers the server's endpoints, picks the one matching the configured security policy and
// mode, connects a session (anonymous or user name), and starts the subscription.
func (d *Driver) Init(ctx context.Context, p mapper.ProtocolConfig) error {
	cfg, err := ParseProtocolConfig(p.ConfigData)
	if err != nil {
		return fmt.Errorf("device %s: %w", p.Device, err)
	}
	d.device, d.cfg = p.Device, cfg
	d.items, d.handles, d.types, d.visitors = map[string]*item{}, map[uint32]*item{}, map[string]ua.TypeID{}, map[string]Visitor{}
	// Each step (discovery, connecting, the subscription) gets the device's timeout of its own.
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, cfg.Timeout) }
	cctx, cancel := step()
	eps, err := opcua.GetEndpoints(cctx, cfg.URL)
	cancel()
	if err != nil {
		return fmt.Errorf("device %s: endpoint discovery at %s: %w", p.Device, cfg.URL, err)
	}
	ep, err := opcua.SelectEndpoint(eps, cfg.SecurityPolicy, cfg.SecurityMode)
	if err != nil {
		return fmt.Errorf("device %s: %s offers no endpoint with securityPolicy %s and securityMode %s (it offers: %s)",
			p.Device, cfg.URL, policyName(cfg.SecurityPolicy), cfg.SecurityMode, offered(eps))
	}
	if cfg.ServerCertificate != "" {
		if err := pinned(cfg.ServerCertificate, ep.ServerCertificate); err != nil {
			return fmt.Errorf("device %s: %w", p.Device, err)
		}
	}
	stateCh := make(chan opcua.ConnState, 16)
	opts := []opcua.Option{opcua.ApplicationURI(appURI), opcua.ApplicationName("kedge opcua mapper"),
		opcua.RequestTimeout(cfg.Timeout), opcua.DialTimeout(cfg.Timeout), opcua.AutoReconnect(true), opcua.ReconnectInterval(time.Second),
		opcua.StateChangedCh(stateCh)}
	if cfg.SecurityPolicy != ua.SecurityPolicyURINone {
		cert, key, err := clientIdentity(cfg)
		if err != nil {
			return fmt.Errorf("device %s: %w", p.Device, err)
		}
		opts = append(opts, opcua.Certificate(cert), opcua.PrivateKey(key))
	}
	tokenType := ua.UserTokenTypeAnonymous
	if !cfg.UserName.empty() {
		user, err := cfg.UserName.resolve("userName")
		if err == nil {
			var pw string
			if pw, err = cfg.Password.resolve("password"); err == nil {
				tokenType = ua.UserTokenTypeUserName
				opts = append(opts, opcua.AuthUsername(user, pw))
			}
		}
		if err != nil {
			return mapper.WithReason(ReasonCredentialsMissing, fmt.Errorf("device %s: %w", p.Device, err))
		}
	} else {
		opts = append(opts, opcua.AuthAnonymous())
	}
	if !offersToken(ep, tokenType) {
		return fmt.Errorf("device %s: the %s endpoint of %s offers no %s login", p.Device, policyName(ep.SecurityPolicyURI), cfg.URL, map[bool]string{true: "user name", false: "anonymous"}[!cfg.UserName.empty()])
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, tokenType))
	c, err := opcua.NewClient(cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("device %s: %w", p.Device, err)
	}
	cctx, cancel = step()
	defer cancel()
	if err := c.Connect(cctx); err != nil {
		err = fmt.Errorf("device %s: connecting to %s (%s, %s): %w", p.Device, cfg.URL, policyName(ep.SecurityPolicyURI), ep.SecurityMode, err)
		if authRefused(err) {
			return mapper.WithReason(ReasonAuthenticationFailed, fmt.Errorf("%w (user %s, password from %s)", err, cfg.UserName, cfg.Password))
		}
		return err
	}
	d.mu.Lock()
	d.c = c
	d.mu.Unlock()
	d.stateStop = make(chan struct{})
	go d.watchState(stateCh, d.stateStop)
	if cfg.Subscribe {
		notify := make(chan *opcua.PublishNotificationData, 64)
		sctx, scancel := step()
		sub, err := c.Subscribe(sctx, &opcua.SubscriptionParameters{Interval: cfg.PublishingInterval}, notify)
		scancel()
		if err != nil {
			return fmt.Errorf("device %s: creating a subscription: %w", p.Device, err) // Close (the runtime calls it) ends the session
		}
		d.sub = sub
		lctx, lcancel := context.WithCancel(context.Background())
		d.cancel, d.done = lcancel, make(chan struct{})
		go d.listen(lctx, notify)
	}
	sessions.add(d) // metrics.go
	return nil
}

// listen keeps each monitored item's latest value.
func (d *Driver) listen(ctx context.Context, notify <-chan *opcua.PublishNotificationData) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notify:
			if n == nil || n.Error != nil {
				continue // a lost connection: AutoReconnect restores the session and its subscription
			}
			dc, ok := n.Value.(*ua.DataChangeNotification)
			if !ok {
				continue
			}
			d.stats.notifications.Add(uint64(len(dc.MonitoredItems)))
			d.mu.Lock()
			for _, mi := range dc.MonitoredItems {
				it := d.handles[mi.ClientHandle]
				if it == nil || mi.Value == nil {
					continue
				}
				if !it.has {
					close(it.ready)
				}
				it.status, it.has = mi.Value.Status, true
				if mi.Value.Value != nil {
					it.value = mi.Value.Value
				}
				if len(it.changes) == maxQueued {
					it.changes = it.changes[1:]
					it.dropped++
				}
				it.changes = append(it.changes, change{value: it.value, status: it.status})
			}
			d.mu.Unlock()
		}
	}
}

// Close ends the subscription and the session.
func (d *Driver) Close() error {
	sessions.remove(d)
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	if d.c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	defer cancel()
	if d.sub != nil {
		d.sub.Cancel(ctx)
	}
	err := d.c.Close(ctx)
	if d.stateStop != nil {
		close(d.stateStop)
	}
	d.mu.Lock()
	d.c = nil
	d.mu.Unlock()
	return err
}

// Health is the session's state: connected means online.
func (d *Driver) Health(ctx context.Context, _ mapper.DeviceRef) error {
	if s := d.c.State(); s != opcua.Connected {
		return fmt.Errorf("session to %s is %s", d.cfg.URL, strings.ToLower(s.String()))
	}
	return nil
}

// CheckProperty refuses a visitor that cannot address a node.
func (d *Driver) CheckProperty(p mapper.Property) error {
	_, err := ParseVisitor(p.Visitor)
	if err != nil {
		return fmt.Errorf("property %q: %w", p.Name, err)
	}
	return nil
}

// visitor parses the property's visitor once and, for a browse path, asks the server for its node
// (once: node ids do not move while the server runs).
func (d *Driver) visitor(ctx context.Context, p mapper.Property) (Visitor, error) {
	d.mu.Lock()
	v, ok := d.visitors[string(p.Visitor)]
	d.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := ParseVisitor(p.Visitor)
	if err != nil {
		return v, fmt.Errorf("property %q: %w", p.Name, err)
	}
	if v.BrowsePath != nil {
		id, err := d.c.Node(v.NodeID).TranslateBrowsePathsToNodeIDs(ctx, v.BrowsePath)
		if err != nil {
			d.stats.failed("browse", err)
			return v, fmt.Errorf("property %q: resolving browsePath %s from %s: %w", p.Name, pathText(v.BrowsePath), v.NodeID, err)
		}
		v.NodeID, v.BrowsePath = id, nil
	}
	d.mu.Lock()
	d.visitors[string(p.Visitor)] = v
	d.mu.Unlock()
	return v, nil
}

func pathText(p []*ua.QualifiedName) string {
	var s []string
	for _, q := range p {
		s = append(s, fmt.Sprintf("%d:%s", q.NamespaceIndex, q.Name))
	}
	return strings.Join(s, "/")
}

// Read returns the property's node value: with subscribe, the oldest change its monitored item
// delivered and not read yet, else the latest (waiting for the item's initial sample, bounded by
// ctx); with subscribe off, a Read call.
func (d *Driver) Read(ctx context.Context, _ mapper.DeviceRef, p mapper.Property) (mapper.Value, error) {
	if s := d.c.State(); s != opcua.Connected {
		return nil, fmt.Errorf("property %q: session to %s is %s", p.Name, d.cfg.URL, strings.ToLower(s.String()))
	}
	v, err := d.visitor(ctx, p)
	if err != nil {
		return nil, err
	}
	key := v.NodeID.String()
	if d.sub != nil {
		it, err := d.monitor(ctx, v)
		if err != nil {
			return nil, fmt.Errorf("property %q (%s): %w", p.Name, key, err)
		}
		// Values come from the subscription alone, so they never go back: the first one is the
		// item's initial sample, sent when it is created.
		select {
		case <-it.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("property %q (%s): no value from the subscription yet: %w", p.Name, key, ctx.Err())
		}
		d.mu.Lock()
		has, status, val := it.has, it.status, it.value
		if len(it.changes) > 0 { // the oldest change not read yet: each change is read once, in order
			status, val = it.changes[0].status, it.changes[0].value
			it.changes = it.changes[1:]
		}
		d.mu.Unlock()
		if has {
			return d.value(p, key, status, val)
		}
	}
	res, err := d.c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: v.NodeID, AttributeID: ua.AttributeIDValue}}, TimestampsToReturn: ua.TimestampsToReturnNeither})
	if err != nil {
		d.stats.failed("read", err)
		return nil, fmt.Errorf("property %q (%s): read: %w", p.Name, key, err)
	}
	if len(res.Results) != 1 {
		return nil, fmt.Errorf("property %q (%s): read answered %d results, want 1", p.Name, key, len(res.Results))
	}
	return d.value(p, key, res.Results[0].Status, res.Results[0].Value)
}

func (d *Driver) value(p mapper.Property, key string, status ua.StatusCode, v *ua.Variant) (mapper.Value, error) {
	if status != ua.StatusOK {
		d.stats.failed("read", status)
		return nil, fmt.Errorf("property %q (%s): the server says %s", p.Name, key, status.Error())
	}
	if v == nil || v.Value() == nil {
		return nil, fmt.Errorf("property %q (%s): the node has no value", p.Name, key)
	}
	d.mu.Lock()
	d.types[key] = v.Type()
	d.mu.Unlock()
	switch x := v.Value().(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case *ua.LocalizedText:
		return x.Text, nil
	case []byte:
		return x, nil
	case float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool, string:
		return x, nil
	default:
		return fmt.Sprint(x), nil
	}
}

// monitor returns the visitor's monitored item (one per node, sampling interval and queue size),
// creating it on first use.
func (d *Driver) monitor(ctx context.Context, v Visitor) (*item, error) {
	key := fmt.Sprintf("%s|%s|%d", v.NodeID, v.SamplingInterval, v.QueueSize)
	d.mu.Lock()
	it := d.items[key]
	if it != nil {
		d.mu.Unlock()
		return it, nil
	}
	d.next++
	h := d.next
	it = &item{node: v.NodeID, ready: make(chan struct{})}
	d.mu.Unlock()
	req := opcua.NewMonitoredItemCreateRequestWithDefaults(v.NodeID, ua.AttributeIDValue, h)
	if v.SamplingInterval > 0 {
		req.RequestedParameters.SamplingInterval = float64(v.SamplingInterval) / float64(time.Millisecond)
	}
	if v.QueueSize > 0 {
		req.RequestedParameters.QueueSize = v.QueueSize
	}
	res, err := d.sub.Monitor(ctx, ua.TimestampsToReturnNeither, req)
	if err != nil {
		d.stats.failed("monitor", err)
		return nil, fmt.Errorf("creating a monitored item: %w", err)
	}
	if len(res.Results) != 1 || res.Results[0].StatusCode != ua.StatusOK {
		code := ua.StatusBad
		if len(res.Results) == 1 {
			code = res.Results[0].StatusCode
		}
		d.stats.failed("monitor", code)
		if len(res.Results) == 1 {
			// gopcua keeps even a refused item and re-creates it when it restores the subscription after
			// a reconnect, where the refusal would fail the whole restore: drop it.
			_, _ = d.sub.Unmonitor(ctx, res.Results[0].MonitoredItemID)
		}
		return nil, fmt.Errorf("the server refused to monitor the node: %s", code.Error())
	}
	it.revisedSampling = time.Duration(res.Results[0].RevisedSamplingInterval * float64(time.Millisecond))
	it.revisedQueue = res.Results[0].RevisedQueueSize
	d.mu.Lock()
	d.items[key], d.handles[h] = it, it
	d.mu.Unlock()
	return it, nil
}

// Write sets the node to the desired value, in the node's own data type.
func (d *Driver) Write(ctx context.Context, dev mapper.DeviceRef, p mapper.Property, value mapper.Value) error {
	v, err := d.visitor(ctx, p)
	if err != nil {
		return err
	}
	key := v.NodeID.String()
	d.mu.Lock()
	typ, ok := d.types[key]
	d.mu.Unlock()
	if !ok {
		if _, err := d.Read(ctx, dev, p); err != nil {
			return fmt.Errorf("property %q (%s): learning the node's type before writing: %w", p.Name, key, err)
		}
		d.mu.Lock()
		typ = d.types[key]
		d.mu.Unlock()
	}
	variant, err := toVariant(typ, value)
	if err != nil {
		return fmt.Errorf("property %q (%s): %w", p.Name, key, err)
	}
	res, err := d.c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{NodeID: v.NodeID, AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant}}}})
	if err != nil {
		d.stats.failed("write", err)
		return fmt.Errorf("property %q (%s): write: %w", p.Name, key, err)
	}
	if len(res.Results) != 1 || res.Results[0] != ua.StatusOK {
		code := ua.StatusBad
		if len(res.Results) == 1 {
			code = res.Results[0]
		}
		d.stats.failed("write", code)
		return fmt.Errorf("property %q (%s): the server refused the write: %s", p.Name, key, code.Error())
	}
	return nil
}

// toVariant converts a desired value to the node's data type, refusing what the type cannot hold.
func toVariant(typ ua.TypeID, v mapper.Value) (*ua.Variant, error) {
	num := func() (float64, error) {
		switch x := v.(type) {
		case int64:
			return float64(x), nil
		case float64:
			return x, nil
		case bool:
			if x {
				return 1, nil
			}
			return 0, nil
		case string:
			return strconv.ParseFloat(x, 64)
		}
		return 0, fmt.Errorf("value %v (%T) is not a number", v, v)
	}
	integer := func(lo, hi float64) (float64, error) {
		f, err := num()
		if err != nil {
			return 0, err
		}
		if f != math.Trunc(f) || f < lo || f > hi {
			return 0, fmt.Errorf("value %v does not fit the node's type %s", v, typ)
		}
		return f, nil
	}
	var out any
	var err error
	var f float64
	switch typ {
	case ua.TypeIDBoolean:
		switch x := v.(type) {
		case bool:
			out = x
		default:
			if f, err = num(); err == nil {
				out = f != 0
			}
		}
	case ua.TypeIDSByte:
		if f, err = integer(math.MinInt8, math.MaxInt8); err == nil {
			out = int8(f)
		}
	case ua.TypeIDByte:
		if f, err = integer(0, math.MaxUint8); err == nil {
			out = uint8(f)
		}
	case ua.TypeIDInt16:
		if f, err = integer(math.MinInt16, math.MaxInt16); err == nil {
			out = int16(f)
		}
	case ua.TypeIDUint16:
		if f, err = integer(0, math.MaxUint16); err == nil {
			out = uint16(f)
		}
	case ua.TypeIDInt32:
		if f, err = integer(math.MinInt32, math.MaxInt32); err == nil {
			out = int32(f)
		}
	case ua.TypeIDUint32:
		if f, err = integer(0, math.MaxUint32); err == nil {
			out = uint32(f)
		}
	case ua.TypeIDInt64:
		if f, err = integer(math.MinInt64, math.MaxInt64); err == nil {
			out = int64(f)
		}
	case ua.TypeIDUint64:
		if f, err = integer(0, math.MaxUint64); err == nil {
			out = uint64(f)
		}
	case ua.TypeIDFloat:
		if f, err = num(); err == nil {
			if math.Abs(f) > math.MaxFloat32 {
				err = fmt.Errorf("value %v does not fit the node's type Float", v)
			}
			out = float32(f)
		}
	case ua.TypeIDDouble:
		f, err = num()
		out = f
	case ua.TypeIDString:
		out = fmt.Sprint(v)
	default:
		return nil, fmt.Errorf("writing a node of type %s is not supported (Boolean, integers, Float, Double, String are)", typ)
	}
	if err != nil {
		return nil, err
	}
	return ua.NewVariant(out)
}

// Reasons of the device's Healthy condition when Init fails for its credentials.
const (
	ReasonAuthenticationFailed = "AuthenticationFailed" // the server refused the user name and password
	ReasonCredentialsMissing   = "CredentialsMissing"   // the Secret or password file is not there
)

// authRefused says whether the server refused the user identity (a wrong user name or password).
func authRefused(err error) bool {
	var code ua.StatusCode
	if !errors.As(err, &code) {
		return false
	}
	switch code {
	case ua.StatusBadUserAccessDenied, ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected, ua.StatusBadUserSignatureInvalid:
		return true
	}
	return false
}

func policyName(uri string) string {
	return strings.TrimPrefix(uri, "http://opcfoundation.org/UA/SecurityPolicy#")
}

func offered(eps []*ua.EndpointDescription) string {
	var s []string
	for _, e := range eps {
		s = append(s, policyName(e.SecurityPolicyURI)+"/"+e.SecurityMode.String())
	}
	return strings.Join(s, ", ")
}

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	for _, tok := range ep.UserIdentityTokens {
		if tok.TokenType == t {
			return true
		}
	}
	return false
}

// pinned checks the endpoint's certificate against the one in file (PEM or DER).
func pinned(file string, got []byte) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("serverCertificate: %w", err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	want, err := x509.ParseCertificate(b)
	if err != nil {
		return fmt.Errorf("serverCertificate %s: %w", file, err)
	}
	if !bytes.Equal(want.Raw, got) {
		return errors.New("the server's certificate is not the one serverCertificate pins; refusing to connect")
	}
	return nil
}
