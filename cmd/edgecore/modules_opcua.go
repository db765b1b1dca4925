//go:build !kedge_custom || kedge_opcua

package main

import _ "github.com/kedge-io/kedge/plugins/mappers/opcua"
