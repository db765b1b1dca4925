//go:build !kedge_custom || kedge_cloudhub

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/cloudhub"
