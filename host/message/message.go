// Package message re-exports sdk/message, where the message model now lives: the module contract
// (sdk/) depends on nothing in host/, so the types it names are defined there. Host code may keep
// importing this package; new code, and every module, imports github.com/kedge-io/kedge/sdk/message.
package message

import "github.com/kedge-io/kedge/sdk/message"

type (
	Message  = message.Message
	Header   = message.Header
	Route    = message.Route
	Resource = message.Resource
)

const (
	OpInsert       = message.OpInsert
	OpUpdate       = message.OpUpdate
	OpPatch        = message.OpPatch
	OpDelete       = message.OpDelete
	OpQuery        = message.OpQuery
	OpResponse     = message.OpResponse
	OpError        = message.OpError
	OpPublish      = message.OpPublish
	OpUpload       = message.OpUpload
	OpKeepalive    = message.OpKeepalive
	OpInventory    = message.OpInventory
	OpConnected    = message.OpConnected
	OpDisconnected = message.OpDisconnected
	IDLen          = message.IDLen
	MaxSize        = message.MaxSize
)

func ValidJSON(b []byte) bool    { return message.ValidJSON(b) }
func NewID() string              { return message.NewID() }
func AppendID(dst []byte) []byte { return message.AppendID(dst) }
func New(source, group, operation, resource string) Message {
	return message.New(source, group, operation, resource)
}
func Encode(m Message) ([]byte, error)                           { return message.Encode(m) }
func Decode(data []byte) (Message, error)                        { return message.Decode(data) }
func ParseCloud(path string) (Resource, error)                   { return message.ParseCloud(path) }
func ParseEdge(path string) (Resource, error)                    { return message.ParseEdge(path) }
func ToEdge(cloudPath string) (node, edgePath string, err error) { return message.ToEdge(cloudPath) }
