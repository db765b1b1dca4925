//go:build !kedge_custom || kedge_edged

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/edged"
