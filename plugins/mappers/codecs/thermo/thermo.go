// Package thermo is the thermo-codec module compiled in: the Acme T-100 register layout (package
// layout) behind the mapper SDK's codec requests. Its WASM build is wasm/examples/thermocodec, the
// same layout code, so swapping builtin → WASM is like for like.
package thermo

import (
	"encoding/json"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// Name is the module's name: the "codec" a property's visitor config names.
const Name = "thermo-codec"

// Version is the firmware layout the builtin decodes (1: degrees Celsius).
const Version = 1

// Info registers thermo-codec (disabled by default).
var Info = sdk.Info{
	Name:    Name,
	Group:   "codec",
	Doc:     "Codec for the Acme T-100 thermometer's registers (uint32 count in two words + check word → degrees Celsius), asked by mappers for properties whose visitor names codec thermo-codec.",
	Enabled: false,
	New:     New,
}

func init() { sdk.Register(Info) }

// New returns the codec module.
func New() sdk.Module {
	return &mapper.CodecModule{
		DecodeFunc: func(req mapper.CodecRequest) (json.RawMessage, error) {
			return layout.Decode(req.Raw, req.Visitor, Version)
		},
		EncodeFunc: func(req mapper.CodecRequest) (json.RawMessage, error) {
			return layout.Encode(req.Value, req.Visitor, Version)
		},
	}
}
