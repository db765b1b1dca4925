package modules

// Class is the device class the binary was built as, stamped by the Makefile's class builds
// (-ldflags "-X github.com/kedge-io/kedge/host/modules.Class=gateway"); empty: see BuildClass.
var Class = ""

// BuildClass is Class, or, for a build without it, "full" (a plain go build links every module) or
// "custom" (a build with the kedge_custom tag and a hand-picked set of modules).
func BuildClass() string {
	if Class != "" {
		return Class
	}
	return defaultClass
}
