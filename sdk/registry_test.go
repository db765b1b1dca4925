package sdk

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

type nop struct{}

func (*nop) Start(context.Context, Host) error     { return nil }
func (*nop) Handle(context.Context, Message) error { return nil }
func (*nop) Stop(context.Context) error            { return nil }

type notStruct int

func (notStruct) Start(context.Context, Host) error     { return nil }
func (notStruct) Handle(context.Context, Message) error { return nil }
func (notStruct) Stop(context.Context) error            { return nil }

func TestRegisterRejectsMalformedModulesAtInit(t *testing.T) {
	newNop := func() Module { return &nop{} }
	tests := []struct {
		name string
		info Info
		want string
	}{
		{"bad name", Info{Name: "Bad_Name", Group: "g", New: newNop}, "must match"},
		{"no group", Info{Name: "a", New: newNop}, "has no group"},
		{"no New", Info{Name: "a", Group: "g"}, "has no New"},
		{"settings not a struct pointer", Info{Name: "a", Group: "g", New: func() Module { return notStruct(1) }}, "pointer to a struct"},
		{"requires itself", Info{Name: "a", Group: "g", New: newNop, Requires: []string{"a"}}, "requires itself"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(r.(string), tt.want) {
					t.Fatalf("Register panic = %v, want %q", r, tt.want)
				}
			}()
			Register(tt.info)
		})
	}
}

var runs int // the registry is process-wide: each run of the test (-count) registers new names

func TestRegisterTwicePanicsAndLookupFindsModules(t *testing.T) {
	runs++
	zz, aa := fmt.Sprintf("zz-test-%d", runs), fmt.Sprintf("aa-test-%d", runs)
	Register(Info{Name: zz, Group: "g", New: func() Module { return &nop{} }})
	Register(Info{Name: aa, Group: "g", New: func() Module { return &nop{} }})
	if _, ok := Lookup(zz); !ok {
		t.Fatal("Lookup missed a registered module")
	}
	all := Registered()
	if !slices.IsSortedFunc(all, func(a, b Info) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("Registered not sorted: %v", all)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "registered twice") {
			t.Fatalf("second Register panic = %v", r)
		}
	}()
	Register(Info{Name: zz, Group: "g", New: func() Module { return &nop{} }})
}
