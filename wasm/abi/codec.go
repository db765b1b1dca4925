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
		Route: Route{Destination: m.Route.Source, Group: m.Route.Group, Operation: "response",
			Resource: m.Route.Resource},
		Content: content,
	}
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
const (
	flagSync     = 1
	messageFixed = 1 + 8 + 10*4
)

// AppendMessage appends m's encoding to b.
func AppendMessage(b []byte, m Message) []byte {
	var flags byte
	if m.Header.Sync {
		flags |= flagSync
	}
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.Header.Timestamp))
	for _, s := range [...]string{m.Header.ID, m.Header.ParentID, m.Header.ResourceVersion, m.Header.Type,
		m.Route.Source, m.Route.Destination, m.Route.Group, m.Route.Operation, m.Route.Resource} {
		b = appendString(b, s)
	}
	return appendBytes(b, m.Content)
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
	var m Message
	err := decodeMessage(own, &m, func(p []byte) string { return unsafe.String(unsafe.SliceData(p), len(p)) })
	return m, err
}

// DecodeMessageView decodes one message for a guest, where allocating is expensive: the strings
// are copied (together, in one allocation) but Content aliases b, so it is valid only as long as b
// is unchanged. The Go guest library hands such messages to Handle.
func DecodeMessageView(b []byte) (Message, error) {
	var m Message
	var arena []byte
	err := decodeMessage(b, &m, func(p []byte) string {
		if arena == nil {
			arena = make([]byte, 0, stringBytes(b))
		}
		at := len(arena)
		arena = append(arena, p...)
		return unsafe.String(unsafe.SliceData(arena[at:]), len(p))
	})
	return m, err
}

// stringBytes is the total length of a message's nine string fields, for one allocation; only
// called once the framing is known to be sound.
func stringBytes(b []byte) int {
	d := decoder{b: b, at: 9}
	n := 0
	for range 9 {
		n += len(d.bytes())
	}
	return n
}

func decodeMessage(b []byte, m *Message, str func([]byte) string) error {
	if len(b) < messageFixed {
		return errors.New("decode message: " + strconv.Itoa(len(b)) + " bytes is shorter than the " + strconv.Itoa(messageFixed) + "-byte minimum")
	}
	if b[0]&^flagSync != 0 {
		return errors.New("decode message: unknown flags 0x" + strconv.FormatUint(uint64(b[0]), 16))
	}
	// Check the framing first, so str only ever sees sound fields.
	d := decoder{b: b, at: 9}
	for range 10 {
		d.bytes()
	}
	if err := d.end("message"); err != nil {
		return err
	}
	d = decoder{b: b, at: 9}
	*m = Message{Header: Header{Sync: b[0]&flagSync != 0, Timestamp: int64(binary.LittleEndian.Uint64(b[1:9]))}}
	for _, s := range [...]*string{&m.Header.ID, &m.Header.ParentID, &m.Header.ResourceVersion, &m.Header.Type,
		&m.Route.Source, &m.Route.Destination, &m.Route.Group, &m.Route.Operation, &m.Route.Resource} {
		if p := d.bytes(); len(p) > 0 {
			*s = str(p)
		}
	}
	if c := d.bytes(); len(c) > 0 {
		m.Content = c[:len(c):len(c)] // an append by the receiver must not run into anything else
	}
	return nil
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
