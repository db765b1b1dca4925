//go:build !kedge_custom || kedge_edgecontroller

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
