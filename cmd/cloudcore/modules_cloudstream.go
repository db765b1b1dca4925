//go:build !kedge_custom || kedge_cloudstream

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/cloudstream"
