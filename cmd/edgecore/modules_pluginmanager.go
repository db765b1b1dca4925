//go:build !kedge_custom || kedge_pluginmanager

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/pluginmanager"
