//go:build !kedge_custom || kedge_edgestream

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/edgestream"
