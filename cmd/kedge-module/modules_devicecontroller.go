//go:build !kedge_custom || kedge_devicecontroller

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
