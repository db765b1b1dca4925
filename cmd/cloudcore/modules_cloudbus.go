//go:build !kedge_custom || kedge_cloudbus

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/cloudbus"
