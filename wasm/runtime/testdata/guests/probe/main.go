// Command probe is the test guest of wasm/runtime: the message's operation picks a behaviour
// (use the host functions, misbehave in one of the ways a sandbox must survive), and the reply's
// content reports what happened.
package main

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"time"

	"github.com/kedge-io/kedge/wasm/guest"
)

type probe struct {
	config  json.RawMessage
	count   int
	hoard   [][]byte
	elapsed int64
}

type request struct {
	To, Group, Resource, Op string
	Key, Value, Msg         string
}

// outcome is the reply's content: the error a host call returned, as the guest saw it.
type outcome struct {
	Err     string `json:"err,omitempty"`
	Denied  bool   `json:"denied,omitempty"`
	Unknown bool   `json:"unknown,omitempty"`
	Value   string `json:"value,omitempty"`
	Count   int    `json:"count,omitempty"`
	Listed  int    `json:"listed,omitempty"`
	Existed bool   `json:"existed,omitempty"`
}

func (p *probe) Init(config []byte) error {
	var c struct{ FailInit, SpinInit bool }
	if err := json.Unmarshal(config, &c); err != nil {
		return err
	}
	if c.FailInit {
		return errors.New("probe refuses to start: failInit is set")
	}
	for c.SpinInit {
		p.elapsed++
	}
	p.config = config
	return nil
}

func (p *probe) Handle(m guest.Message) error {
	var req request
	if len(m.Content) > 0 {
		if err := json.Unmarshal(m.Content, &req); err != nil {
			return err
		}
	}
	var out outcome
	switch m.Route.Operation {
	case "whoami":
		return reply(m, map[string]any{"name": guest.Name(), "node": guest.NodeName(), "group": guest.Group(), "config": p.config})
	case "count":
		p.count++
		out.Count = p.count
	case "send":
		msg := guest.Message{Route: guest.Route{Operation: req.Op, Resource: req.Resource}, Content: []byte(`{"from":"probe"}`)}
		if req.Group != "" {
			out.set(guest.SendToGroup(req.Group, msg))
		} else {
			out.set(guest.Send(req.To, msg))
		}
	case "reply-about":
		// Answer, but about another resource than the one asked about.
		r := m.Reply([]byte(`"answer"`))
		r.Route.Resource = req.Resource
		return guest.Reply(r)
	case "reply-invalid":
		// A plain reply (content only) whose content is not JSON: the host must refuse it.
		out.set(guest.Reply(m.Reply([]byte(`{"not":json`))))
	case "reply-full":
		// A reply that is not exactly m.Reply's, so the whole message crosses (the old way).
		r := m.Reply([]byte(`"full"`))
		r.Header.Type = "full"
		return guest.Reply(r)
	case "store":
		k := guest.Key{Type: "note", Name: req.Key}
		if err := guest.StorePut(k, []byte(req.Value)); err != nil {
			out.set(err)
			break
		}
		v, err := guest.StoreGet(k)
		out.Value = string(v)
		out.set(err)
		list, err := guest.StoreList(guest.Query{Type: "note"})
		out.Listed = len(list)
		out.set(err)
	case "store-get":
		v, err := guest.StoreGet(guest.Key{Type: "note", Name: req.Key})
		out.Value = string(v)
		out.set(err)
	case "store-delete":
		out.Existed, _ = guest.StoreDelete(guest.Key{Type: "note", Name: req.Key})
	case "log":
		out.set(guest.Log(guest.LevelWarn, req.Msg))
	case "print":
		os.Stdout.WriteString(req.Msg + "\n")
	case "now":
		out.Value = strconv.FormatInt(guest.Now().UnixNano(), 10)
	case "fail":
		return errors.New("probe fails on purpose")
	case "panic":
		panic("probe panics on purpose")
	case "exit":
		os.Exit(3)
	case "spin":
		for {
			p.elapsed++
		}
	case "sleep":
		time.Sleep(time.Hour)
	case "hog":
		// Asks for twice the manifest's memory limit in one allocation, so the limit stops it at
		// once however slow the machine is (growing 1 MiB at a time with a GC between steps could
		// outlast the 1 s deadline on a busy machine and be killed for that instead).
		for {
			p.hoard = append(p.hoard, make([]byte, 16<<20))
		}
	}
	return reply(m, out)
}

func (o *outcome) set(err error) {
	if err != nil && o.Err == "" {
		o.Err = err.Error()
		o.Denied = errors.Is(err, guest.ErrDenied)
		o.Unknown = errors.Is(err, guest.ErrUnknownModule)
	}
}

func reply(m guest.Message, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return guest.Reply(m.Reply(b))
}

func init() { guest.Register(&probe{}) }

func main() {}
