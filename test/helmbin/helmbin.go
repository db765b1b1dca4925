// Package helmbin finds the real Helm CLI for tests: $KEDGE_HELM, else the one hack/helm.sh builds
// from the Go module proxy (helm.sh/helm/v4, cached under _bin/helm/), and runs it on the chart.
package helmbin

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kedge-io/kedge/test/k8senv"
)

var (
	once sync.Once
	bin  string
	err  error
)

// Chart is the folder of the kedge chart.
func Chart() string { return filepath.Join(k8senv.Repo(), "deploy", "helm", "kedge") }

// Path returns the helm binary, building it (once per machine, minutes cold) when missing.
func Path() (string, error) {
	once.Do(func() {
		if p := os.Getenv("KEDGE_HELM"); p != "" {
			bin = p
			return
		}
		cmd := exec.Command(filepath.Join(k8senv.Repo(), "hack", "helm.sh"), "bin")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, e := cmd.Output()
		if e != nil {
			err = fmt.Errorf("hack/helm.sh bin: %v: %s", e, stderr.String())
			return
		}
		bin = strings.TrimSpace(string(out))
	})
	return bin, err
}

// Run runs helm with args and returns stdout, and stderr in the error when it fails.
func Run(args ...string) (string, error) {
	p, err := Path()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+os.TempDir()+"/kedge-helm-cache", "HELM_CONFIG_HOME="+os.TempDir()+"/kedge-helm-config",
		"HELM_DATA_HOME="+os.TempDir()+"/kedge-helm-data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v: %s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// Template renders the chart as release "kedge" in namespace with the given values files and --set
// pairs (the CRDs included when crds is true).
func Template(namespace string, crds bool, valuesFiles []string, sets ...string) (string, error) {
	args := []string{"template", "kedge", Chart(), "--namespace", namespace, "--kube-version", "1.36.3"}
	if crds {
		args = append(args, "--include-crds")
	}
	for _, f := range valuesFiles {
		args = append(args, "-f", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return Run(args...)
}
