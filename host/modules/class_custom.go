//go:build kedge_custom

package modules

// defaultClass: a kedge_custom build not stamped with a class name links a hand-picked set of modules.
const defaultClass = "custom"
