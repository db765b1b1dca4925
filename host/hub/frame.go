// Package hub is the cloud–edge transport both Kedge hosts share: KubeEdge's "viaduct" framing over a
// TLS websocket, so a Kedge edge can talk to a KubeEdge cloudcore and a KubeEdge edgecore to a Kedge
// cloudcore.
//
// A message travels as two binary websocket frames: a 10-byte header (version, type, flags, payload
// length) and the protobuf-encoded message. Conn adds what viaduct leaves to its callers: write
// deadlines, websocket pings with a read deadline of two heartbeat intervals (so a half-open link is
// noticed in seconds, not minutes), a size limit enforced before a payload is read, typed decode
// errors and Prometheus metrics. Dial is the edge side; Accept is the cloud side and takes the node's
// identity from its verified client certificate. See README.md for the wire facts and their sources.
package hub

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kedge-io/kedge/host/message"
)

// Frame header layout (big-endian), as KubeEdge's viaduct packer writes it.
const (
	HeaderSize = 10 // version(4) type(1) flags(1) length(4)

	// Version is 1.1.1: major<<24 | minor<<16 | fix<<8, the low byte zero.
	Version uint32 = 1<<24 | 1<<16 | 1<<8

	TypeMessage byte = 0x01 // the only package type a hub carries; viaduct's 0x02 stream and 0x04 user-defined are refused

	FlagCompressed byte = 0x80 // payload is gzip-compressed protobuf (a Kedge choice: viaduct defines the bit, never sets it)

	// MaxPayload bounds a payload, before and after decompression.
	MaxPayload = message.MaxSize
)

// Reasons a frame is rejected. A *FrameError wraps exactly one of these, so errors.Is tells them
// apart and Reason names them for logs and metrics.
var (
	ErrHeader     = errors.New("malformed header frame")           // not binary, or not 10 bytes
	ErrVersion    = errors.New("unsupported frame version")        // major version other than 1
	ErrType       = errors.New("unsupported package type")         // anything but 0x01 message
	ErrFlags      = errors.New("unknown frame flags")              // a bit other than 0x80 compressed
	ErrTooLarge   = errors.New("payload over the size limit")      // header length or payload frame too big
	ErrLength     = errors.New("payload length mismatch")          // payload frame size differs from the header
	ErrTruncated  = errors.New("truncated protobuf")               // a field runs past the end of the payload
	ErrWireType   = errors.New("wrong protobuf wire type")         // a known field with an unexpected encoding
	ErrMalformed  = errors.New("malformed protobuf")               // bad tag, invalid UTF-8 string, overlong varint
	ErrContent    = errors.New("content is neither JSON nor text") // non-JSON bytes that are not valid UTF-8
	ErrCompressed = errors.New("bad compressed payload")           // gzip stream corrupt or inflating past the limit
	ErrInvalid    = errors.New("invalid message")                  // decodes, but fails message.Validate
)

// reasonErrs lists the Err* values in the order of reasonNames (metrics.go), their labels.
var reasonErrs = [len(reasonNames)]error{ErrHeader, ErrVersion, ErrType, ErrFlags, ErrTooLarge, ErrLength,
	ErrTruncated, ErrWireType, ErrMalformed, ErrContent, ErrCompressed, ErrInvalid}

// FrameError is a rejected frame: which rule it broke (Err, one of the Err* values) and the detail.
type FrameError struct {
	Err    error
	Detail string
}

func (e *FrameError) Error() string { return "decode frame: " + e.Err.Error() + ": " + e.Detail }
func (e *FrameError) Unwrap() error { return e.Err }

// Reason is the short label of the rule e broke ("version", "truncated", ...), as in metrics.
func (e *FrameError) Reason() string {
	if i := reasonIndex(e.Err); i >= 0 {
		return reasonNames[i]
	}
	return "other"
}

func reasonIndex(err error) int {
	for i, r := range reasonErrs {
		if r == err {
			return i
		}
	}
	return -1
}

func frameErr(kind error, format string, args ...any) *FrameError {
	return &FrameError{Err: kind, Detail: fmt.Sprintf(format, args...)}
}

// Header is the decoded 10-byte frame header.
type Header struct {
	Version uint32
	Type    byte
	Flags   byte
	Length  uint32 // payload bytes that follow in the next frame
}

// AppendHeader appends h's 10 wire bytes to dst.
func AppendHeader(dst []byte, h Header) []byte {
	dst = binary.BigEndian.AppendUint32(dst, h.Version)
	dst = append(dst, h.Type, h.Flags)
	return binary.BigEndian.AppendUint32(dst, h.Length)
}

// ParseHeader decodes and checks a header frame: exactly 10 bytes, major version 1, type message, no
// unknown flags, length at most maxPayload (MaxPayload if not positive). Minor and fix versions are
// not checked, so a 1.x peer that only adds features still talks to us.
func ParseHeader(b []byte, maxPayload int) (Header, error) {
	if maxPayload <= 0 {
		maxPayload = MaxPayload
	}
	if len(b) != HeaderSize {
		return Header{}, frameErr(ErrHeader, "header frame is %d bytes, want %d", len(b), HeaderSize)
	}
	h := Header{
		Version: binary.BigEndian.Uint32(b[0:4]),
		Type:    b[4],
		Flags:   b[5],
		Length:  binary.BigEndian.Uint32(b[6:10]),
	}
	switch {
	case h.Version>>24 != Version>>24:
		return h, frameErr(ErrVersion, "version %d.%d.%d (0x%08x), want major %d",
			h.Version>>24, h.Version>>16&0xff, h.Version>>8&0xff, h.Version, Version>>24)
	case h.Type != TypeMessage:
		return h, frameErr(ErrType, "package type 0x%02x (%s), this hub carries only 0x01 (message)", h.Type, typeName(h.Type))
	case h.Flags&^FlagCompressed != 0:
		return h, frameErr(ErrFlags, "flags 0x%02x, only 0x80 (compressed) is defined", h.Flags)
	case uint64(h.Length) > uint64(maxPayload):
		return h, frameErr(ErrTooLarge, "header announces %d payload bytes, limit is %d", h.Length, maxPayload)
	}
	return h, nil
}

func typeName(t byte) string {
	switch t {
	case 0x02:
		return "stream"
	case 0x04:
		return "user-defined"
	}
	return "unknown"
}

// EncodeFrame returns the two frames that carry m: header and payload. The payload is gzip-compressed
// only if compress is set (a KubeEdge peer cannot read compressed frames).
func EncodeFrame(m message.Message, compress bool) (header, payload []byte, err error) {
	payload, err = MarshalMessage(nil, m)
	if err != nil {
		return nil, nil, err
	}
	var flags byte
	if compress {
		if payload, err = gzipBytes(payload); err != nil {
			return nil, nil, err
		}
		flags = FlagCompressed
	}
	if len(payload) > MaxPayload {
		return nil, nil, fmt.Errorf("encode %s: payload is %d bytes, limit is %d: split the content", m, len(payload), MaxPayload)
	}
	return AppendHeader(nil, Header{Version: Version, Type: TypeMessage, Flags: flags, Length: uint32(len(payload))}), payload, nil
}

// DecodeFrame checks a header frame and its payload frame and decodes the message. maxPayload (
// MaxPayload if not positive) bounds the payload before and after decompression. The returned
// message's Content may share memory with payload.
func DecodeFrame(header, payload []byte, maxPayload int) (message.Message, error) {
	if maxPayload <= 0 {
		maxPayload = MaxPayload
	}
	h, err := ParseHeader(header, maxPayload)
	if err != nil {
		return message.Message{}, err
	}
	if uint64(len(payload)) != uint64(h.Length) {
		return message.Message{}, frameErr(ErrLength, "header announces %d payload bytes, payload frame has %d", h.Length, len(payload))
	}
	return decodePayload(h, payload, maxPayload)
}

func decodePayload(h Header, payload []byte, maxPayload int) (message.Message, error) {
	if h.Flags&FlagCompressed != 0 {
		var err error
		if payload, err = gunzipBytes(payload, maxPayload); err != nil {
			return message.Message{}, err
		}
	}
	return UnmarshalMessage(payload)
}

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("compress payload: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress payload: %w", err)
	}
	return buf.Bytes(), nil
}

func gunzipBytes(b []byte, limit int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, frameErr(ErrCompressed, "gzip header: %v", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return nil, frameErr(ErrCompressed, "gzip stream: %v", err)
	}
	if len(out) > limit {
		return nil, frameErr(ErrTooLarge, "compressed payload inflates past the %d-byte limit", limit)
	}
	return out, nil
}
