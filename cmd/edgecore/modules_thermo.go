//go:build !kedge_custom || kedge_thermo

package main

import _ "github.com/kedge-io/kedge/plugins/mappers/codecs/thermo"
