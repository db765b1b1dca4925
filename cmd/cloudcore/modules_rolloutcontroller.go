//go:build !kedge_custom || kedge_rolloutcontroller

package main

import _ "github.com/kedge-io/kedge/plugins/builtin/rolloutcontroller"
