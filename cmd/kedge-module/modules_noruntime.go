//go:build !kedge_custom || kedge_noruntime

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/noruntime"
