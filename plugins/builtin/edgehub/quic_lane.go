//go:build !kedge_noquic

package edgehub

import "github.com/kedge-io/kedge/host/hub/quichub"

// The QUIC lane links quic-go; a build with the tag kedge_noquic (the feature quic left out in
// cmd/modules.yaml) has none and refuses quic.enable by name.
func init() { quicDial = quichub.Dial }
