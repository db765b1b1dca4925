// Command echo is an example Kedge WASM module: it answers every message with the message's own
// content. The benchmarks use it to measure a round trip into a guest.
package main

import "github.com/kedge-io/kedge/wasm/guest"

type echo struct{}

func (echo) Init([]byte) error { return nil }

func (echo) Handle(m guest.Message) error { return guest.Reply(m.Reply(m.Content)) }

func init() { guest.Register(echo{}) }

func main() {} // never called: a reactor module runs its init functions, then waits for calls
