//go:build !kedge_custom || kedge_devicetwin

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/devicetwin"
