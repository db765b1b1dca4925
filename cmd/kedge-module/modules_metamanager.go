//go:build !kedge_custom || kedge_metamanager

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/metamanager"
