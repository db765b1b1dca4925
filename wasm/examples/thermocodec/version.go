//go:build !thermocodec_v2

package main

// version is the firmware layout this build decodes: 1 reports degrees Celsius.
const version = 1
