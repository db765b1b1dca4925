package abi

import (
	"encoding/binary"
	"errors"
	"strconv"
	"unsafe"
)

// Header, Route and Message mirror host/message: the same fields, with Content as raw JSON bytes.
type Header struct {
	ID              string
	ParentID        string
	Timestamp       int64 // milliseconds since the Unix epoch
	ResourceVersion string
	Sync            bool
	Type            string
}

type Route struct {
	Source      string
	Destination string
	Group       string
	Operation   string
	Resource    string
}

type Message struct {
	Header Header
	Route  Route
	// Content is JSON; the host refuses a message whose content is not valid JSON. In a guest's
	// Handle it aliases the exchange buffer: valid until Handle returns, so copy what you keep.
	Content []byte
}

// Reply builds the answer to m: ParentID is m's ID, the route points back to m's source with the
// same group and resource, operation "response", and the sync flag is kept so a waiting sender
// matches it. The host fills in the ID, the timestamp and the source.
func (m Message) Reply(content []byte) Message {
	return Message{
		Header: Header{ParentID: m.Header.ID, Sync: m.Header.Sync, ResourceVersion: m.Header.ResourceVersion},
		Route: Route{Destination: m.Route.Source, Group: m.Route.Group, Operation: opResponse,
			Resource: m.Route.Resource},
		Content: content,
	}
}

// opResponse is the operation of a reply. A variable, not a constant, so IsReplyTo can recognise
// Reply's string by its address.
var opResponse = "response"

// IsReplyTo reports whether r is exactly what req.Reply(r.Content) returns, unchanged since: then
// the host can build it from req alone (ImportReplyContent) and only the content need cross. It
// compares the strings' addresses and lengths, not their bytes, and without a branch (each taken
// branch costs a guest ~40 ns under termination checks): a field the caller replaced, even with an
// equal string, makes it false, and the full reply is sent instead, which is the same message.
func IsReplyTo(req, r *Message) bool {
	d := uint64(len(r.Header.ID)) | uint64(r.Header.Timestamp) | uint64(len(r.Header.Type)) |
		uint64(len(r.Route.Source)) |
		uint64(*(*byte)(unsafe.Pointer(&r.Header.Sync))^*(*byte)(unsafe.Pointer(&req.Header.Sync))) |
		same(r.Header.ParentID, req.Header.ID) | same(r.Header.ResourceVersion, req.Header.ResourceVersion) |
		same(r.Route.Destination, req.Route.Source) | same(r.Route.Group, req.Route.Group) |
		same(r.Route.Resource, req.Route.Resource) | same(r.Route.Operation, opResponse)
	return d == 0
}

// same is 0 when a and b are the same string in memory: same address, same length.
func same(a, b string) uint64 {
	return uint64(uintptr(unsafe.Pointer(unsafe.StringData(a)))^uintptr(unsafe.Pointer(unsafe.StringData(b)))) |
		uint64(len(a)^len(b))
}

// Message encoding (all integers little-endian):
//
//	flags     u8   bit 0: sync; the other bits are zero
//	timestamp i64
//	9 fields  u32 length + bytes each: id, parent_id, resourceversion, type,
//	          source, destination, group, operation, resource
//	content   u32 length + bytes
//
// Nothing may follow the content.
//
// The message codec is written for Go compiled to WebAssembly, where every function call that is
// not inlined costs about as much as copying a kilobyte: straight-line code, inlinable helpers, one
// allocation per decoded message.
const (
	flagSync     = 1
	fieldCount   = 10 // nine strings and the content
	messageFixed = 1 + 8 + fieldCount*4
)

// AppendMessage appends m's encoding to b.
func AppendMessage(b []byte, m Message) []byte {
	n := MessageSize(m)
	at := len(b)
	if cap(b)-at < n {
		grown := make([]byte, at, 2*cap(b)+n)
		copy(grown, b)
		b = grown
	}
	b = b[:at+n]
	e := b[at:]
	e[0] = *(*byte)(unsafe.Pointer(&m.Header.Sync)) // flagSync or 0, without a branch
	binary.LittleEndian.PutUint64(e[1:], uint64(m.Header.Timestamp))
	i := putString(e, 9, m.Header.ID)
	i = putString(e, i, m.Header.ParentID)
	i = putString(e, i, m.Header.ResourceVersion)
	i = putString(e, i, m.Header.Type)
	i = putString(e, i, m.Route.Source)
	i = putString(e, i, m.Route.Destination)
	i = putString(e, i, m.Route.Group)
	i = putString(e, i, m.Route.Operation)
	i = putString(e, i, m.Route.Resource)
	binary.LittleEndian.PutUint32(e[i:], uint32(len(m.Content)))
	move(e[i+4:i+4+len(m.Content)], unsafe.SliceData(m.Content))
	return b
}

// putString has no branch for an empty s: in a guest a taken branch costs more than copying nothing.
func putString(e []byte, i int, s string) int {
	binary.LittleEndian.PutUint32(e[i:], uint32(len(s)))
	move(e[i+4:i+4+len(s)], unsafe.StringData(s))
	return i + 4 + len(s)
}

// MessageSize is len(AppendMessage(nil, m)).
func MessageSize(m Message) int {
	return messageFixed + len(m.Header.ID) + len(m.Header.ParentID) + len(m.Header.ResourceVersion) +
		len(m.Header.Type) + len(m.Route.Source) + len(m.Route.Destination) + len(m.Route.Group) +
		len(m.Route.Operation) + len(m.Route.Resource) + len(m.Content)
}

// DecodeMessage decodes one message. The result never aliases b: it is copied once, and the strings
// and content share that private copy (one allocation per message).
func DecodeMessage(b []byte) (Message, error) {
	own := make([]byte, len(b))
	copy(own, b)
	// An arena over the copy's own string bytes: DecodeMessageView's copy of the strings then moves
	// them onto themselves, and everything stays in the one allocation.
	at := min(9, len(own))
	a := Arena{chunk: own[at:at]}
	return DecodeMessageView(own, &a)
}

// Arena holds the strings of decoded messages. It hands out fresh space from chunks of a few KiB and
// never writes anything twice, so the strings stay immutable while a guest allocates about once
// per chunk instead of once per message. The zero value is ready to use.
type Arena struct {
	chunk []byte
}

const arenaChunk = 8 << 10

// take returns n fresh bytes.
func (a *Arena) take(n int) []byte {
	if cap(a.chunk)-len(a.chunk) < n {
		a.chunk = make([]byte, 0, max(n, arenaChunk))
	}
	at := len(a.chunk)
	a.chunk = a.chunk[:at+n]
	return a.chunk[at : at+n : at+n]
}

// DecodeMessageView decodes one message for a guest, where allocating is expensive: the strings
// are copied into a, but Content aliases b, so it is valid only as long as b is unchanged. The Go
// guest library hands such messages to Handle.
//
// In a guest compiled with termination checks every taken branch, every loop iteration and every
// entry into a function that is not inlined leaves the native code (~40 ns each), so the common case
// is one function of straight-line code: the ten length prefixes are read unrolled, reads past the
// end are clamped, and what went wrong is only worked out (by explain) when something did.
func DecodeMessageView(b []byte, a *Arena) (Message, error) {
	if len(b) < messageFixed || b[0]&^flagSync != 0 {
		return Message{}, explain(b)
	}
	var f frame
	last := len(b) - 4 // the last offset a length prefix may start at; >= 45 here
	bad := 0
	at := f.field(b, 0, 9, last, &bad)
	at = f.field(b, 1, at, last, &bad)
	at = f.field(b, 2, at, last, &bad)
	at = f.field(b, 3, at, last, &bad)
	at = f.field(b, 4, at, last, &bad)
	at = f.field(b, 5, at, last, &bad)
	at = f.field(b, 6, at, last, &bad)
	at = f.field(b, 7, at, last, &bad)
	at = f.field(b, 8, at, last, &bad)
	at = f.field(b, 9, at, last, &bad)
	if bad>>63|(at^len(b)) != 0 {
		return Message{}, explain(b)
	}
	// The strings and their length prefixes lie together between the fixed header and the
	// content's prefix: one copy keeps them all, at the same offsets less strs' start (9).
	// The content's length prefix is copied too, so even an empty last string points inside strs.
	strs := a.take(f.end[fieldCount-2] + 4 - 9)
	move(strs, &b[9 : f.end[fieldCount-2]+4][0])
	var m Message
	m.Header.Sync = b[0]&flagSync != 0
	m.Header.Timestamp = int64(binary.LittleEndian.Uint64(b[1:9]))
	m.Header.ID = f.str(strs, 0, 9)
	m.Header.ParentID = f.str(strs, 1, f.end[0])
	m.Header.ResourceVersion = f.str(strs, 2, f.end[1])
	m.Header.Type = f.str(strs, 3, f.end[2])
	m.Route.Source = f.str(strs, 4, f.end[3])
	m.Route.Destination = f.str(strs, 5, f.end[4])
	m.Route.Group = f.str(strs, 6, f.end[5])
	m.Route.Operation = f.str(strs, 7, f.end[6])
	m.Route.Resource = f.str(strs, 8, f.end[7])
	if start, end := f.end[8]+4, f.end[9]; end > start {
		m.Content = b[start:end:end] // an append by the receiver must not run into anything else
	}
	return m, nil
}

// frame holds where each field of an encoded message ends (it starts at its length prefix + 4).
type frame struct {
	end [fieldCount]int
}

// field records where field i, whose length prefix is at at, ends, and returns that end. A prefix
// that does not fit sets bad's sign bit and is read from last instead, so nothing is read out of
// range; at stays far below overflow (each step adds at most 2^32+4).
func (f *frame) field(b []byte, i, at, last int, bad *int) int {
	over := last - at // negative when the prefix does not fit
	*bad |= over
	// min(at, last) without a branch (the compiler branches for a value used as an address)
	end := at + 4 + int(binary.LittleEndian.Uint32(b[at+over&(over>>63):]))
	f.end[i] = end
	return end
}

// explain walks a malformed message field by field and says what is wrong with it.
func explain(b []byte) error {
	if len(b) < messageFixed {
		return errors.New("decode message: " + strconv.Itoa(len(b)) + " bytes is shorter than the " +
			strconv.Itoa(messageFixed) + "-byte minimum")
	}
	if b[0]&^flagSync != 0 {
		return errors.New("decode message: unknown flags 0x" + strconv.FormatUint(uint64(b[0]), 16))
	}
	at := 9
	for i := range fieldCount {
		if len(b)-at < 4 {
			return errors.New("decode message: field " + strconv.Itoa(i) + " at byte " + strconv.Itoa(at) + ": truncated length")
		}
		n := uint64(binary.LittleEndian.Uint32(b[at:]))
		at += 4
		if n > uint64(len(b)-at) {
			return errors.New("decode message: field " + strconv.Itoa(i) + " at byte " + strconv.Itoa(at) + " claims " +
				strconv.FormatUint(n, 10) + " bytes, " + strconv.Itoa(len(b)-at) + " left")
		}
		at += int(n)
	}
	return errors.New("decode message: " + strconv.Itoa(len(b)-at) + " trailing bytes")
}

// str is field i, whose length prefix starts at prev (the previous field's end). No branch for an
// empty field (a taken branch is what costs in a guest): its pointer is to the next length prefix,
// inside strs, and a zero-length string never reads it. strs holds the message from byte 9 on.
func (f *frame) str(strs []byte, i, prev int) string {
	start := prev + 4 - 9
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(strs)), start)), f.end[i]-9-start)
}

// Key addresses one object in the module's store namespace; Type and Name must not be empty.
type Key struct {
	Type, Namespace, Name string
}

// Query selects objects; an empty field matches anything.
type Query struct {
	Type, Namespace, NamePrefix string
}

// Entry is one object of a StoreList result.
type Entry struct {
	Key             Key
	ResourceVersion uint64
	Value           []byte
}

// Init is what the host passes to ExportInit.
type Init struct {
	Name   string // the module's name (its routing address)
	Node   string // the node's name
	Group  string // the module's routing group
	Config []byte // the module's settings from the host config, as a JSON object
}

// AppendKey appends a key (three u32-length strings: type, namespace, name).
func AppendKey(b []byte, k Key) []byte {
	return appendString(appendString(appendString(b, k.Type), k.Namespace), k.Name)
}

// DecodeKey decodes AppendKey's encoding.
func DecodeKey(b []byte) (Key, error) {
	d := decoder{b: b}
	k := Key{Type: d.string(), Namespace: d.string(), Name: d.string()}
	return k, d.end("key")
}

// AppendQuery appends a query, encoded like a key: type, namespace, name prefix.
func AppendQuery(b []byte, q Query) []byte {
	return AppendKey(b, Key{q.Type, q.Namespace, q.NamePrefix})
}

// DecodeQuery decodes AppendQuery's encoding.
func DecodeQuery(b []byte) (Query, error) {
	d := decoder{b: b}
	q := Query{Type: d.string(), Namespace: d.string(), NamePrefix: d.string()}
	return q, d.end("query")
}

// AppendValue appends a store_get result: u64 resourceVersion, then the value to the end.
func AppendValue(b []byte, rv uint64, value []byte) []byte {
	return append(binary.LittleEndian.AppendUint64(b, rv), value...)
}

// DecodeValue decodes AppendValue's encoding; value is a copy.
func DecodeValue(b []byte) (rv uint64, value []byte, err error) {
	if len(b) < 8 {
		return 0, nil, errors.New("decode value: " + strconv.Itoa(len(b)) + " bytes is shorter than the 8-byte resourceVersion")
	}
	return binary.LittleEndian.Uint64(b), append([]byte{}, b[8:]...), nil
}

// AppendEntries appends a store_list result: u32 count, then per entry its key, u64 resourceVersion
// and u32-length value.
func AppendEntries(b []byte, es []Entry) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(es)))
	for _, e := range es {
		b = AppendKey(b, e.Key)
		b = binary.LittleEndian.AppendUint64(b, e.ResourceVersion)
		b = appendBytes(b, e.Value)
	}
	return b
}

// DecodeEntries decodes AppendEntries' encoding; the entries are copies.
func DecodeEntries(b []byte) ([]Entry, error) {
	d := decoder{b: b}
	n := d.uint32()
	// Each entry takes at least 20 bytes, which bounds what a hostile count can make us allocate.
	if d.err == nil && uint64(n)*20 > uint64(len(b)-4) {
		return nil, errors.New("decode entries: count " + strconv.FormatUint(uint64(n), 10) + " does not fit in " + strconv.Itoa(len(b)) + " bytes")
	}
	es := make([]Entry, 0, n)
	for i := uint32(0); i < n && d.err == nil; i++ {
		e := Entry{Key: Key{Type: d.string(), Namespace: d.string(), Name: d.string()}}
		e.ResourceVersion = d.uint64()
		e.Value = append([]byte{}, d.bytes()...)
		es = append(es, e)
	}
	return es, d.end("entries")
}

// AppendInit appends an Init: four u32-length fields, name, node, group, config.
func AppendInit(b []byte, in Init) []byte {
	return appendBytes(appendString(appendString(appendString(b, in.Name), in.Node), in.Group), in.Config)
}

// DecodeInit decodes AppendInit's encoding.
func DecodeInit(b []byte) (Init, error) {
	d := decoder{b: b}
	in := Init{Name: d.string(), Node: d.string(), Group: d.string()}
	in.Config = append([]byte{}, d.bytes()...)
	return in, d.end("init")
}

func appendString(b []byte, s string) []byte {
	return append(binary.LittleEndian.AppendUint32(b, uint32(len(s))), s...)
}

func appendBytes(b []byte, p []byte) []byte {
	return append(binary.LittleEndian.AppendUint32(b, uint32(len(p))), p...)
}

// decoder reads fields in order; the first problem sticks and later reads return zero values.
type decoder struct {
	b   []byte
	at  int
	err error
}

func (d *decoder) need(n uint64, what string) bool {
	if d.err != nil {
		return false
	}
	if n > uint64(len(d.b)-d.at) {
		d.err = errors.New(what + " at byte " + strconv.Itoa(d.at) + " needs " + strconv.FormatUint(n, 10) +
			" bytes, " + strconv.Itoa(len(d.b)-d.at) + " left")
		return false
	}
	return true
}

func (d *decoder) uint32() uint32 {
	if !d.need(4, "length") {
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b[d.at:])
	d.at += 4
	return v
}

func (d *decoder) uint64() uint64 {
	if !d.need(8, "resourceVersion") {
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.at:])
	d.at += 8
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uint32()
	if !d.need(uint64(n), "field") {
		return nil
	}
	p := d.b[d.at : d.at+int(n)]
	d.at += int(n)
	return p
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) end(what string) error {
	if d.err == nil && d.at != len(d.b) {
		d.err = errors.New(strconv.Itoa(len(d.b)-d.at) + " trailing bytes")
	}
	if d.err != nil {
		return errors.New("decode " + what + ": " + d.err.Error())
	}
	return nil
}
