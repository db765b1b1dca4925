package pluginmanager

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kedge-io/kedge/wasm/manifest"
)

// Capability names a rollout may grant (grantedCapabilities):
//
//	send                    any send (every module, group and resource pattern)
//	send.modules:<pattern>  sending to modules matching exactly this manifest pattern
//	send.groups:<pattern>   sending to groups matching exactly this manifest pattern
//	send.resources:<pattern> sending or replying about resources matching exactly this pattern
//	store                   the module's own store namespace
//	log                     the host's log
const (
	capSend          = "send"
	capSendModules   = "send.modules:"
	capSendGroups    = "send.groups:"
	capSendResources = "send.resources:"
	capStore         = "store"
	capLog           = "log"
)

// checkGranted returns the capabilities the manifest asks for that granted does not cover, named as
// a rollout would grant them; an unknown granted name is an error.
func checkGranted(asked *manifest.Capabilities, granted []string) (missing []string, err error) {
	for _, g := range granted {
		switch {
		case g == capSend || g == capStore || g == capLog:
		case strings.HasPrefix(g, capSendModules), strings.HasPrefix(g, capSendGroups), strings.HasPrefix(g, capSendResources):
		default:
			return nil, fmt.Errorf("grantedCapabilities: %q is not a capability (send, send.modules:<pattern>, send.groups:<pattern>, send.resources:<pattern>, store, log)", g)
		}
	}
	if asked == nil {
		return nil, nil
	}
	has := func(s string) bool { return slices.Contains(granted, s) }
	if asked.Store && !has(capStore) {
		missing = append(missing, capStore)
	}
	if asked.Log && !has(capLog) {
		missing = append(missing, capLog)
	}
	if !has(capSend) {
		for _, set := range []struct {
			prefix   string
			patterns []string
		}{{capSendModules, asked.Send.Modules}, {capSendGroups, asked.Send.Groups}, {capSendResources, asked.Send.Resources}} {
			for _, p := range set.patterns {
				if !has(set.prefix + p) {
					missing = append(missing, set.prefix+p)
				}
			}
		}
	}
	return missing, nil
}
