//go:build !kedge_custom || kedge_dmi

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/dmi"
