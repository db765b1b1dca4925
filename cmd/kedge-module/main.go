// Command kedge-module serves one builtin module as a plugin executable, from the same source that
// is compiled into edgecore, so a module can run as runtime: process (crash isolation, its own
// release cycle) without a second implementation. Build one per module:
//
//	go build -tags "kedge_custom kedge_nodestatus" -ldflags "-X main.moduleName=nodestatus" \
//	    -o _bin/modules/nodestatus ./cmd/kedge-module
//
// (make module-nodestatus does this). The build tags link only that module; moduleName picks it.
// -X main.version=<v> stamps a release into the executable (`kedge-module version` prints it, and the
// plugin reports it to the host, so `edgecore module ls` shows it in VERSION beside the file's sha256).
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/plugin"
)

// moduleName is set at build time with -ldflags "-X main.moduleName=<name>". Left empty, the build
// must contain exactly one module, which is served.
var moduleName string

// version is set at build time with -ldflags "-X main.version=<v>".
var version = "dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Printf("kedge-module %s %s\n", moduleName, version)
		return
	}
	info, err := pick(moduleName, sdk.Registered())
	if err != nil {
		fmt.Fprintf(os.Stderr, "kedge-module: %v\n", err)
		os.Exit(2)
	}
	plugin.Serve(info, plugin.WithVersion(version))
}

func pick(name string, registered []sdk.Info) (sdk.Info, error) {
	names := make([]string, len(registered))
	for i, info := range registered {
		names[i] = info.Name
		if info.Name == name {
			return info, nil
		}
	}
	switch {
	case name == "" && len(registered) == 1:
		return registered[0], nil
	case name == "":
		return sdk.Info{}, fmt.Errorf("built with modules %s: set one with -ldflags \"-X main.moduleName=<name>\", or build with -tags \"kedge_custom kedge_<name>\"",
			strings.Join(names, ", "))
	default:
		return sdk.Info{}, fmt.Errorf("module %q is not in this build (it has: %s): build with -tags \"kedge_custom kedge_%s\"",
			name, strings.Join(names, ", "), name)
	}
}
