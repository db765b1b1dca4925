// Package opcua is the OPC-UA mapper (protocol "opcua"): a mapper.Driver on github.com/gopcua/opcua
// with endpoint discovery, security policies None and Basic256Sha256 (Sign, SignAndEncrypt),
// anonymous or user-name login, node ids as visitors, subscriptions (monitored items) instead of
// polling, and writes in the node's own data type. Registered as the builtin module "opcua".
package opcua

import (
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// Name is the module's name; Protocol the devices' spec.protocol.protocolName it serves.
const (
	Name     = "opcua"
	Protocol = "opcua"
)

// Info registers the OPC-UA mapper (disabled by default).
var Info = sdk.Info{
	Name:    Name,
	Group:   "mapper",
	Doc:     "Mapper for OPC-UA devices (protocol opcua): endpoint discovery, security None or Basic256Sha256 (Sign, SignAndEncrypt), anonymous or user-name login, node ids as visitors, subscriptions instead of polling, typed writes; registered with edgecore over DMI.",
	Enabled: false,
	New:     func() sdk.Module { return mapper.New(Protocol, NewDriver).WithCollectors(sessions) },
}

func init() { sdk.Register(Info) }
