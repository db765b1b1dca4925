package sdk_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const (
	modulePath = "github.com/kedge-io/kedge"
	hostPrefix = modulePath + "/host/"
)

// allowedHostImports are the host/ packages a module under plugins/ may import, and which modules
// may. Each is a deliberate exception (see sdk/README.md, "Boundaries"); everything else a module
// needs is in sdk/. An entry here is a debt to pay, not a pattern to copy.
var allowedHostImports = map[string][]string{
	// The cloud–edge transport itself (KubeEdge's websocket/QUIC framing, connections, repeat
	// suppression). cloudhub and edgehub are the two ends of it, run as modules so they can be
	// swapped and configured like the rest; no other module talks to the wire.
	"host/hub": {"plugins/builtin/cloudhub", "plugins/builtin/edgehub"},
	// The QUIC lane of that transport, in its own package so device classes without QUIC link no
	// quic-go (edgehub imports it only in builds with the quic feature).
	"host/hub/quichub": {"plugins/builtin/cloudhub", "plugins/builtin/edgehub"},
	// Certificates: the cloud CA and certificate server (cloudhub), serving certificates for the
	// stream and console endpoints, and the edge's certificate rotation (edgehub). Security code
	// stays in one place, owned by the host.
	"host/pki": {"plugins/builtin/cloudhub", "plugins/builtin/cloudstream", "plugins/builtin/console", "plugins/builtin/edgehub"},
	// The CA and token records kept in Kubernetes Secrets, read by the modules that serve TLS on the
	// cloud side.
	"host/pki/kubestore": {"plugins/builtin/cloudhub", "plugins/builtin/cloudstream", "plugins/builtin/console"},
}

type listedPackage struct {
	ImportPath string
	Dir        string
	Imports    []string
	Deps       []string
}

// goList runs `go list -deps=false -json` on patterns and returns the packages (with their transitive
// Deps, as `go list -deps` reports them).
func goList(t *testing.T, patterns ...string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json=ImportPath,Dir,Imports,Deps"}, patterns...)...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list %v: %v\n%s", patterns, err, ee.Stderr)
		}
		t.Fatalf("go list %v: %v", patterns, err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %v listed no packages", patterns)
	}
	return pkgs
}

func hostPackages(paths []string) []string {
	var out []string
	for _, p := range paths {
		if strings.HasPrefix(p, hostPrefix) {
			out = append(out, strings.TrimPrefix(p, modulePath+"/"))
		}
	}
	return out
}

// hostDeps lists, for each package, the host packages it links (directly or not).
func hostDeps(pkgs []listedPackage) []string {
	var out []string
	for _, p := range pkgs {
		if bad := hostPackages(p.Deps); len(bad) > 0 {
			out = append(out, fmt.Sprintf("%s depends on host packages %v", p.ImportPath, bad))
		}
	}
	return out
}

// moduleViolations lists the host imports of module packages that allowedHostImports does not allow,
// and host packages linked by a module that imports no allowed one.
func moduleViolations(pkgs []listedPackage) []string {
	var out []string
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, modulePath+"/")
		allowedHere := false
		for _, h := range hostPackages(p.Imports) {
			if owners, ok := allowedHostImports[h]; !ok || !slices.ContainsFunc(owners, func(o string) bool {
				return rel == o || strings.HasPrefix(rel, o+"/")
			}) {
				out = append(out, fmt.Sprintf("%s imports %s: modules import sdk/, not host/ (add what it needs to sdk/ or to the host handle; an exception belongs in allowedHostImports with its reason)", rel, h))
				continue
			}
			allowedHere = true
		}
		if bad := hostPackages(p.Deps); !allowedHere && len(bad) > 0 {
			out = append(out, fmt.Sprintf("%s links host packages %v through its dependencies", rel, bad))
		}
	}
	return out
}

// TestSDKDependsOnNothingInHost proves the contract points one way: no package under sdk/ — the
// contract, the plugin server, the proto, the mapper SDK — links anything from host/, directly or
// through another package. (Test files may use host/sdktest, the real host wrapped for tests.)
func TestSDKDependsOnNothingInHost(t *testing.T) {
	for _, v := range hostDeps(goList(t, "./sdk/...")) {
		t.Error(v + "; the contract must not (move what it needs into sdk/)")
	}
}

// TestModulesImportOnlyAllowedHostPackages proves a module under plugins/ imports host/ packages only
// from allowedHostImports, and that a module with none of those links nothing from host/ at all.
func TestModulesImportOnlyAllowedHostPackages(t *testing.T) {
	for _, v := range moduleViolations(goList(t, "./plugins/...")) {
		t.Error(v)
	}
}

// TestBoundaryChecksReportHostImports proves the checks above can fail: host/sdktest (which imports
// the host's router, store and module manager) is reported by both, as a package under sdk/ and as
// a module would be.
func TestBoundaryChecksReportHostImports(t *testing.T) {
	pkgs := goList(t, "./host/sdktest")
	if got := hostDeps(pkgs); len(got) != 1 || !strings.Contains(got[0], "host/router") {
		t.Errorf("hostDeps(host/sdktest) = %q, want one report naming host/router", got)
	}
	if got := moduleViolations(pkgs); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "imports host/modules") {
		t.Errorf("moduleViolations(host/sdktest) = %q, want a report of its host/modules import", got)
	}
}
