//go:build !kedge_custom || kedge_nodestatus

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/nodestatus"
