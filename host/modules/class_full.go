//go:build !kedge_custom

package modules

// defaultClass: without kedge_custom every module is linked, as the full class.
const defaultClass = "full"
