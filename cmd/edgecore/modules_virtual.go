//go:build !kedge_custom || kedge_virtual

package main

import _ "github.com/kedge-io/kedge/plugins/mappers/virtual"
