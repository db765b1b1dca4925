//go:build tools

// Package deps pins modules the project's packages are about to use, so parallel work on them never
// has to edit go.mod. Each import moves to the package that uses it; this file shrinks to nothing.
package deps

import (
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/mochi-mqtt/server/v2"
	_ "k8s.io/cri-api/pkg/apis/runtime/v1"
)
