//go:build !kedge_custom || kedge_modbus

package main

import _ "github.com/kedge-io/kedge/plugins/mappers/modbus"
