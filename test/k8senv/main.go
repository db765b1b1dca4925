package k8senv

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Repo is the repository's root folder (build/crds, examples).
func Repo() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// InstallCRDs installs every CRD of build/crds and waits until they are served.
func (e *Env) InstallCRDs() error {
	if _, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(Repo(), "build", "crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		return fmt.Errorf("installing the CRDs of build/crds: %w", err)
	}
	return nil
}

// RunTests is a package's TestMain body for tests that share one control plane: it starts it, runs
// setup with it, runs the tests and stops it, returning the exit code. Under -short or with
// KEDGE_SKIP_K8S set nothing is started and setup is not called (the tests skip themselves on a nil
// Env); a control plane that does not start, or a failing setup, fails the package with one line
// naming pkg.
func RunTests(m *testing.M, pkg string, setup func(*Env) error) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if testing.Short() || os.Getenv("KEDGE_SKIP_K8S") != "" {
		return m.Run()
	}
	env, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests need a control plane: %v\n", pkg, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if err := setup(env); err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: %v\n", pkg, err)
		return 1
	}
	return m.Run()
}
