package wasmruntime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unsafe"

	"github.com/tetratelabs/wazero/api"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/wasm/abi"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// instantiateHost defines the "kedge" host module of ABI version 1 in the module's runtime. Every
// function runs on the goroutine that called into the guest, so they share the Module's state
// without locks.
func (m *Module) instantiateHost(ctx context.Context) error {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	b := m.rt.NewHostModuleBuilder(abi.ImportModule)
	def := func(name string, fn api.GoModuleFunc, params, results []api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(fn, params, results).Export(name)
	}
	def(abi.ImportSend, m.hostSend, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	def(abi.ImportSendGroup, m.hostSendGroup, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	def(abi.ImportReply, m.hostReply, []api.ValueType{i32, i32}, []api.ValueType{i32})
	def(abi.ImportReplyContent, m.hostReplyContent, []api.ValueType{i32, i32}, []api.ValueType{i32})
	def(abi.ImportStoreGet, m.hostStoreGet, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	def(abi.ImportStorePut, m.hostStorePut, []api.ValueType{i32, i32, i32, i32, i64}, []api.ValueType{i32})
	def(abi.ImportStoreDelete, m.hostStoreDelete, []api.ValueType{i32, i32}, []api.ValueType{i32})
	def(abi.ImportStoreList, m.hostStoreList, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	def(abi.ImportLog, m.hostLog, []api.ValueType{i32, i32, i32}, []api.ValueType{i32})
	def(abi.ImportNow, m.hostNow, nil, []api.ValueType{i64})
	def(abi.ImportLastError, m.hostLastError, []api.ValueType{i32, i32}, []api.ValueType{i32})
	def(abi.ImportFail, m.hostFail, []api.ValueType{i32, i32}, nil)
	_, err := b.Instantiate(ctx)
	return err
}

func (m *Module) hostSend(ctx context.Context, mod api.Module, stack []uint64) {
	m.sendTo(ctx, mod, stack, "send", "module", m.manifest.Capabilities.Send.Modules, m.host.Send)
}

func (m *Module) hostSendGroup(ctx context.Context, mod api.Module, stack []uint64) {
	m.sendTo(ctx, mod, stack, "send_group", "group", m.manifest.Capabilities.Send.Groups, m.host.SendToGroup)
}

// sendTo is send and send_group: read the target name and the message from guest memory, check the
// manifest grants that target (kind "module" or "group"), then send.
func (m *Module) sendTo(ctx context.Context, mod api.Module, stack []uint64, op, kind string, granted []string,
	send func(context.Context, string, sdk.Message) error) {
	to, ok := read(mod, stack[0], stack[1])
	if !ok {
		stack[0] = m.failed(abi.Invalid, op+": the "+kind+" name lies outside the guest's memory")
		return
	}
	msg, r := m.readMessage(mod, stack[2], stack[3], op)
	if r == 0 {
		r = m.grantSend(kind, granted, string(to), msg)
	}
	if r == 0 {
		r = m.result(send(ctx, string(to), msg))
	}
	stack[0] = r
}

func (m *Module) hostReply(ctx context.Context, mod api.Module, stack []uint64) {
	msg, r := m.readMessage(mod, stack[0], stack[1], "reply")
	if r != 0 {
		stack[0] = r
		return
	}
	if m.handling && msg.Header.ParentID == m.cur.Header.ID {
		// An answer to the message in hand always goes back to its sender, wherever the guest
		// pointed it: answering is implied by being asked.
		msg.Route.Destination = m.cur.Route.Source
		r = m.grantResource("reply", msg)
	} else {
		r = m.grantSend("module", m.manifest.Capabilities.Send.Modules, msg.Route.Destination, msg)
	}
	if r == 0 {
		r = m.result(m.host.Reply(ctx, msg))
	}
	stack[0] = r
}

// hostReplyContent answers the message in hand with the guest's content: the reply is the one the
// guest's Message.Reply builds (parent ID, sync flag and resourceVersion of the request, back to
// its source with its group and resource, operation "response"), made here from the request so only
// the content crosses. It is checked and authorized like such a reply through hostReply.
func (m *Module) hostReplyContent(ctx context.Context, mod api.Module, stack []uint64) {
	if !m.handling {
		stack[0] = m.failed(abi.Invalid, "reply_content: no message is being handled (it answers the message in hand)")
		return
	}
	if size := api.DecodeU32(stack[1]); size > message.MaxSize {
		stack[0] = m.failed(abi.Invalid, fmt.Sprintf("reply_content: %d bytes of content exceed the %d-byte message limit", size, message.MaxSize))
		return
	}
	b, ok := read(mod, stack[0], stack[1])
	if !ok {
		stack[0] = m.failed(abi.Invalid, "reply_content: the content lies outside the guest's memory")
		return
	}
	if len(b) > 0 && !message.ValidJSON(b) {
		stack[0] = m.failed(abi.Invalid, "reply_content: the content is not valid JSON")
		return
	}
	req := &m.cur
	r := sdk.Message{
		Header: message.Header{ParentID: req.Header.ID, Timestamp: time.Now().UnixMilli(), Sync: req.Header.Sync,
			ResourceVersion: req.Header.ResourceVersion},
		Route: message.Route{Destination: req.Route.Source, Group: req.Route.Group, Operation: message.OpResponse,
			Resource: req.Route.Resource},
	}
	// One allocation holds the new ID and a copy of the content (guest memory is reused).
	own := append(message.AppendID(make([]byte, 0, message.IDLen+len(b))), b...)
	r.Header.ID = unsafe.String(&own[0], message.IDLen)
	if len(b) > 0 {
		r.Content = own[message.IDLen:len(own):len(own)]
	}
	if s := m.grantResource("reply", r); s != 0 {
		stack[0] = s
		return
	}
	stack[0] = m.result(m.host.Reply(ctx, r))
}

// readMessage decodes and checks a message the guest passed.
func (m *Module) readMessage(mod api.Module, addr, n uint64, call string) (sdk.Message, uint64) {
	if size := api.DecodeU32(n); size > message.MaxSize {
		return sdk.Message{}, m.failed(abi.Invalid, fmt.Sprintf("%s: a %d-byte message exceeds the %d-byte limit", call, size, message.MaxSize))
	}
	b, ok := read(mod, addr, n)
	if !ok {
		return sdk.Message{}, m.failed(abi.Invalid, call+": the message lies outside the guest's memory")
	}
	am, err := abi.DecodeMessage(b)
	if err != nil {
		return sdk.Message{}, m.failed(abi.Invalid, call+": "+err.Error())
	}
	switch {
	case am.Route.Operation == "":
		return sdk.Message{}, m.failed(abi.Invalid, call+": route.operation is empty")
	case am.Header.Timestamp < 0:
		return sdk.Message{}, m.failed(abi.Invalid, call+": header.timestamp is negative")
	case len(am.Content) > 0 && !message.ValidJSON(am.Content):
		return sdk.Message{}, m.failed(abi.Invalid, call+": the content is not valid JSON")
	}
	return fromABI(am), 0
}

// grantSend checks a destination and the message's resource against the manifest.
func (m *Module) grantSend(kind string, patterns []string, to string, msg sdk.Message) uint64 {
	if !manifest.Match(patterns, to) {
		return m.deny("send", fmt.Sprintf("sending to %s %q is not granted by the manifest (capabilities.send.%ss)", kind, to, kind))
	}
	return m.grantResource("send", msg)
}

func (m *Module) grantResource(call string, msg sdk.Message) uint64 {
	if !manifest.Match(m.manifest.Capabilities.Send.Resources, msg.Route.Resource) {
		return m.deny("resource", fmt.Sprintf("%s about resource %q is not granted by the manifest (capabilities.send.resources)", call, msg.Route.Resource))
	}
	return 0
}

func (m *Module) hostStoreGet(ctx context.Context, mod api.Module, stack []uint64) {
	k, r := m.readKey(mod, stack[0], stack[1], "store_get")
	if r != 0 {
		stack[0] = r
		return
	}
	obj, err := m.host.Store().Get(ctx, k)
	if err != nil {
		stack[0] = m.result(err)
		return
	}
	m.out = abi.AppendValue(m.out[:0], obj.ResourceVersion, obj.Value)
	stack[0] = m.deliver(mod, stack[2], stack[3], m.out)
}

func (m *Module) hostStorePut(ctx context.Context, mod api.Module, stack []uint64) {
	k, r := m.readKey(mod, stack[0], stack[1], "store_put")
	if r != 0 {
		stack[0] = r
		return
	}
	v, ok := read(mod, stack[2], stack[3])
	if !ok {
		stack[0] = m.failed(abi.Invalid, "store_put: the value lies outside the guest's memory")
		return
	}
	res, err := m.host.Store().Put(ctx, sdk.Object{Key: k, ResourceVersion: stack[4], Value: v})
	if err != nil {
		stack[0] = m.result(err)
		return
	}
	stack[0] = boolResult(res.Applied)
}

func (m *Module) hostStoreDelete(ctx context.Context, mod api.Module, stack []uint64) {
	k, r := m.readKey(mod, stack[0], stack[1], "store_delete")
	if r != 0 {
		stack[0] = r
		return
	}
	existed, err := m.host.Store().Delete(ctx, k)
	if err != nil {
		stack[0] = m.result(err)
		return
	}
	stack[0] = boolResult(existed)
}

func (m *Module) hostStoreList(ctx context.Context, mod api.Module, stack []uint64) {
	if !m.manifest.Capabilities.Store {
		stack[0] = m.deny("store", "store_list: the store is not granted by the manifest (capabilities.store)")
		return
	}
	b, ok := read(mod, stack[0], stack[1])
	if !ok {
		stack[0] = m.failed(abi.Invalid, "store_list: the query lies outside the guest's memory")
		return
	}
	q, err := abi.DecodeQuery(b)
	if err != nil {
		stack[0] = m.failed(abi.Invalid, "store_list: "+err.Error())
		return
	}
	objs, err := m.host.Store().List(ctx, sdk.Query{Type: q.Type, Namespace: q.Namespace, NamePrefix: q.NamePrefix})
	if err != nil {
		stack[0] = m.result(err)
		return
	}
	es := make([]abi.Entry, len(objs))
	for i, o := range objs {
		es[i] = abi.Entry{Key: abi.Key{Type: o.Type, Namespace: o.Namespace, Name: o.Name}, ResourceVersion: o.ResourceVersion, Value: o.Value}
	}
	m.out = abi.AppendEntries(m.out[:0], es)
	stack[0] = m.deliver(mod, stack[2], stack[3], m.out)
}

// readKey decodes a store key, after checking the store is granted at all.
func (m *Module) readKey(mod api.Module, addr, n uint64, call string) (sdk.Key, uint64) {
	if !m.manifest.Capabilities.Store {
		return sdk.Key{}, m.deny("store", call+": the store is not granted by the manifest (capabilities.store)")
	}
	b, ok := read(mod, addr, n)
	if !ok {
		return sdk.Key{}, m.failed(abi.Invalid, call+": the key lies outside the guest's memory")
	}
	k, err := abi.DecodeKey(b)
	if err != nil {
		return sdk.Key{}, m.failed(abi.Invalid, call+": "+err.Error())
	}
	return sdk.Key{Type: k.Type, Namespace: k.Namespace, Name: k.Name}, 0
}

func (m *Module) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	if !m.manifest.Capabilities.Log {
		stack[0] = m.deny("log", "log: logging is not granted by the manifest (capabilities.log)")
		return
	}
	level := slog.Level(int32(stack[0]))
	if !m.log.Enabled(ctx, level) {
		stack[0] = 0
		return
	}
	msg, ok := read(mod, stack[1], stack[2])
	if !ok {
		stack[0] = m.failed(abi.Invalid, "log: the message lies outside the guest's memory")
		return
	}
	m.log.Log(ctx, level, string(msg), "from", "guest")
	stack[0] = 0
}

func (m *Module) hostNow(_ context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(time.Now().UnixNano())
}

func (m *Module) hostLastError(_ context.Context, mod api.Module, stack []uint64) {
	m.out = append(m.out[:0], m.lastErr...)
	stack[0] = m.deliver(mod, stack[0], stack[1], m.out)
}

func (m *Module) hostFail(_ context.Context, mod api.Module, stack []uint64) {
	if b, ok := read(mod, stack[0], stack[1]); ok {
		m.failMsg = string(b)
	} else {
		m.failMsg = "(the guest's error message lies outside its memory)"
	}
}

// read returns a view of guest memory; the view is valid until the guest runs again.
func read(mod api.Module, addr, n uint64) ([]byte, bool) {
	return mod.Memory().Read(api.DecodeU32(addr), api.DecodeU32(n))
}

// deliver writes a result into the guest's out buffer if it fits, and returns its size either way:
// a size above the capacity tells the guest to grow its buffer and ask again.
func (m *Module) deliver(mod api.Module, addr, capacity uint64, b []byte) uint64 {
	if uint64(len(b)) > uint64(api.DecodeU32(capacity)) {
		return uint64(len(b))
	}
	if !mod.Memory().Write(api.DecodeU32(addr), b) {
		return m.failed(abi.Invalid, "the result buffer lies outside the guest's memory")
	}
	return uint64(len(b))
}

// result maps a host error to a status the guest sees, keeping the explanation for last_error.
func (m *Module) result(err error) uint64 {
	if err == nil {
		return 0
	}
	s := abi.Internal
	switch {
	case errors.Is(err, store.ErrNotFound):
		s = abi.NotFound
	case errors.Is(err, router.ErrUnknownModule), errors.Is(err, router.ErrNoWaiter):
		s = abi.UnknownModule
	case errors.Is(err, store.ErrInvalidKey), errors.Is(err, router.ErrNoID), errors.Is(err, router.ErrDuplicate):
		s = abi.Invalid
	case errors.Is(err, router.ErrMailboxFull), errors.Is(err, router.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s = abi.Unavailable
	}
	return m.failed(s, err.Error())
}

func (m *Module) failed(s abi.Status, msg string) uint64 {
	m.lastErr = msg
	return uint64(uint32(-int32(s)))
}

// deny refuses what the manifest does not grant: the guest gets Denied, the denial is counted, and
// the first of each kind is logged (the metric tells how many followed).
func (m *Module) deny(capability, msg string) uint64 {
	m.metrics.denied.WithLabelValues(capability).Inc()
	if !m.denials[capability] {
		m.denials[capability] = true
		m.log.Warn("wasm module denied by its manifest (logged once per capability)", "capability", capability, "err", msg)
	}
	return m.failed(abi.Denied, msg)
}

func boolResult(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
