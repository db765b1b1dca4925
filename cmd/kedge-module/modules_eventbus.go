//go:build !kedge_custom || kedge_eventbus

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/eventbus"
