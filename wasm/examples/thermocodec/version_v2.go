//go:build thermocodec_v2

package main

// version is the firmware layout this build decodes: 2 reports Kelvin.
const version = 2
