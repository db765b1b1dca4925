//go:build !kedge_custom || kedge_edgehub

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/edgehub"
