//go:build thermocodec_faults

package main

import (
	"encoding/json"
	"os"
)

// A test build (-tags thermocodec_faults) that misbehaves on request, to prove the host contains a
// broken codec: a property whose visitor says {"fault": "hang"} or {"fault": "exit"} hangs (until
// the host's deadline kills the instance) or exits (the instance dies), on every reading, or only on
// the reading whose count is faultAt.
func init() {
	fault = func(raw, visitor []byte) {
		var v struct {
			Fault   string  `json:"fault"`
			FaultAt *uint32 `json:"faultAt"`
		}
		_ = json.Unmarshal(visitor, &v)
		if v.Fault == "" {
			return
		}
		if v.FaultAt != nil {
			var regs []uint16
			if json.Unmarshal(raw, &regs) != nil || len(regs) < 2 || uint32(regs[0])<<16|uint32(regs[1]) != *v.FaultAt {
				return
			}
		}
		switch v.Fault {
		case "hang":
			for spin := 0; ; spin++ {
				_ = spin
			}
		case "exit":
			os.Exit(3)
		}
	}
}
