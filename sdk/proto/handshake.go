// Package modulepb is the wire protocol between a Kedge host and a module running as a plugin
// process: the gRPC services of module.proto (generated code, `make generate`), the go-plugin
// handshake both sides must agree on, and the conversions between wire and host types.
//
// Module authors do not use it directly: sdk/plugin serves a module over it and host/process
// drives a plugin through it.
package modulepb

import (
	goplugin "github.com/hashicorp/go-plugin"
)

// Handshake is checked by go-plugin before anything else: a binary that is not a Kedge plugin (or
// one built for another protocol version) refuses to start instead of misbehaving. ProtocolVersion
// changes only with an incompatible change to module.proto; the module contract's own version
// (sdk.APIVersion) is checked separately in Start.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "KEDGE_PLUGIN",
	MagicCookieValue: "7d0fff22695b74eed891627f4233f8773ed734d2fe71487c",
}

// PluginName is the one plugin every Kedge plugin executable serves in go-plugin's plugin set.
const PluginName = "module"

// MaxMessageSize bounds one gRPC message both ways: a Kedge message may be 32 MiB (message.MaxSize)
// and a batch of replies rides in one response, so gRPC's 4 MiB default is too small.
const MaxMessageSize = 256 << 20

// WindowSize is the HTTP/2 flow-control window both sides set. A fixed window turns off gRPC's
// bandwidth-delay estimator, whose PING frames would add a wakeup to nearly every message of the
// Handle stream; 16 MiB lets a large message through without waiting for window updates.
const WindowSize = 16 << 20
