//go:build !kedge_custom || kedge_console

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/console"
