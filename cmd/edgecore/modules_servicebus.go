//go:build !kedge_custom || kedge_servicebus

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/servicebus"
