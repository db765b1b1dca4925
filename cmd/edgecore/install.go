package main

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

//go:embed edgecore.service.tmpl
var unitTemplate string

// UnitName is the systemd service edgecore runs as on a box.
const UnitName = "edgecore.service"

// defaultUnitDir is where join --install writes the unit (the .deb ships it in /lib/systemd/system).
const defaultUnitDir = "/etc/systemd/system"

func init() { spec.Commands = append(spec.Commands, unitCommand(), resetCommand()) }

// unitParams fill edgecore.service.tmpl.
type unitParams struct {
	Binary, Config, ConfigDir, DataDir string
}

// renderUnit renders the hardened systemd unit for a binary, config file and data folder (absolute).
func renderUnit(p unitParams) ([]byte, error) {
	for k, v := range map[string]string{"binary": p.Binary, "config": p.Config, "data dir": p.DataDir} {
		if !filepath.IsAbs(v) {
			return nil, fmt.Errorf("systemd unit: the %s %q must be an absolute path", k, v)
		}
		if strings.ContainsAny(v, " \t\n\"'\\%$") {
			return nil, fmt.Errorf("systemd unit: the %s %q has a space, quote, backslash, %% or $ (not allowed in a unit's paths)", k, v)
		}
	}
	p.ConfigDir = filepath.Dir(p.Config)
	// Plain replacement, not text/template: a template's reflective field access makes the linker keep
	// every exported method in the binary (see BENCHMARKS.md "Device classes").
	out := strings.NewReplacer("{{.Binary}}", p.Binary, "{{.Config}}", p.Config, "{{.ConfigDir}}", p.ConfigDir,
		"{{.DataDir}}", p.DataDir).Replace(unitTemplate)
	if i := strings.Index(out, "{{"); i >= 0 {
		return nil, fmt.Errorf("systemd unit: edgecore.service.tmpl has an unknown placeholder at %q", truncateAt(out[i:], "\n"))
	}
	return []byte(out), nil
}

// truncateAt is s up to the first sep.
func truncateAt(s, sep string) string {
	if i := strings.Index(s, sep); i >= 0 {
		return s[:i]
	}
	return s
}

// unitCommand is "edgecore systemd-unit": print the unit (packaging and inspection).
func unitCommand() *cobra.Command {
	p := unitParams{Binary: "/usr/bin/edgecore", Config: "/etc/kedge/edgecore.yaml", DataDir: "/var/lib/kedge"}
	cmd := &cobra.Command{
		Use:   "systemd-unit",
		Short: "Print the hardened systemd unit edgecore join --install writes (the .deb ships the same)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := renderUnit(p)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(u)
			return err
		},
	}
	cmd.Flags().StringVar(&p.Binary, "binary", p.Binary, "edgecore's path in ExecStart")
	cmd.Flags().StringVar(&p.Config, "config-file", p.Config, "edgecore.yaml's path")
	cmd.Flags().StringVar(&p.DataDir, "data-dir", p.DataDir, "edgecore's data folder (writable for the service)")
	return cmd
}

// systemdRunning says whether systemd is PID 1 (sd_booted).
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// checkInstall refuses, before anything is asked of cloudcore, to replace an installed unit.
func checkInstall(unitDir string, force bool) error {
	path := filepath.Join(unitDir, UnitName)
	_, err := os.Stat(path)
	switch {
	case err == nil && !force:
		return fmt.Errorf("%s exists: edgecore is already installed on this box (a second join would replace the node's identity under a running service); run 'edgecore reset' first, or pass --force to overwrite the unit and config", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("check %s: %w", path, err)
	}
	return nil
}

// install writes the unit for the joined config and, where systemd runs, enables and starts it.
func install(out io.Writer, unitDir, configOut, dataDir string) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--install: find edgecore's own path: %w", err)
	}
	if bin, err = filepath.EvalSymlinks(bin); err != nil {
		return fmt.Errorf("--install: %w", err)
	}
	cfg, err := filepath.Abs(configOut)
	if err != nil {
		return err
	}
	data, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	u, err := renderUnit(unitParams{Binary: bin, Config: cfg, DataDir: data})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(unitDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", unitDir, err)
	}
	path := filepath.Join(unitDir, UnitName)
	if err := writeFile(path, u); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s\n", path)
	if !systemdRunning() || unitDir != defaultUnitDir {
		fmt.Fprintf(out, "systemd is not managing this unit folder here; start it with: systemctl daemon-reload && systemctl enable --now %s\n", UnitName)
		return nil
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", UnitName}} {
		if b, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
	fmt.Fprintf(out, "enabled and started %s\n", UnitName)
	return nil
}

type resetFlags struct {
	config, unitDir string
	force           bool
}

// resetCommand is "edgecore reset": undo join --install (KubeEdge's keadm reset).
func resetCommand() *cobra.Command {
	f := resetFlags{config: "/etc/kedge/edgecore.yaml", unitDir: defaultUnitDir}
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop edgecore and remove its unit, config, certificates and data (undoes join --install)",
		Long: `reset undoes 'edgecore join --install' on this box: it stops and disables edgecore.service (where
systemd runs), then removes the unit, edgecore.yaml, the data folder (the store, the certificates,
the MetaServer's files, edged's folder, plugins) and the admin socket. It lists what it removes and
asks first unless --force. The Node object in Kubernetes stays: delete it with kubectl delete node,
and revoke its certificate record with 'cloudcore token create --node <name> --replace' on rejoin.`,
		Example: `  edgecore reset
  edgecore reset --force --config /etc/kedge/edgecore.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runReset(cmd, f) },
	}
	cmd.Flags().StringVar(&f.config, "config", f.config, "edgecore.yaml written by join: its paths say what to remove")
	cmd.Flags().StringVar(&f.unitDir, "unit-dir", f.unitDir, "folder of edgecore.service")
	cmd.Flags().BoolVar(&f.force, "force", false, "do not ask")
	return cmd
}

// joinedPaths reads the paths join wrote into edgecore.yaml.
func joinedPaths(config string) (dataDir string, files []string, err error) {
	b, err := os.ReadFile(config)
	if err != nil {
		return "", nil, err
	}
	var c struct {
		Store struct {
			Path string `yaml:"path"`
		} `yaml:"store"`
		Admin struct {
			Socket string `yaml:"socket"`
		} `yaml:"admin"`
		Modules map[string]map[string]any `yaml:"modules"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", nil, fmt.Errorf("%s: %w", config, err)
	}
	if c.Store.Path == "" || !filepath.IsAbs(c.Store.Path) {
		return "", nil, fmt.Errorf("%s: store.path %q is not an absolute path: not a config written by edgecore join", config, c.Store.Path)
	}
	dataDir = filepath.Dir(c.Store.Path)
	if ns, ok := c.Modules["nodestatus"]["storagePath"].(string); ok && ns != "" {
		dataDir = ns
	}
	// Files named in the config outside the data folder (certificates given elsewhere).
	for _, m := range c.Modules {
		for _, k := range []string{"caFile", "certFile", "keyFile", "socket", "adminTokenFile"} {
			if v, ok := m[k].(string); ok && filepath.IsAbs(v) {
				files = append(files, v)
			}
		}
		if ms, ok := m["metaServer"].(map[string]any); ok {
			for _, k := range []string{"certFile", "keyFile", "adminTokenFile"} {
				if v, ok := ms[k].(string); ok && filepath.IsAbs(v) {
					files = append(files, v)
				}
			}
		}
	}
	if c.Admin.Socket != "" {
		files = append(files, c.Admin.Socket)
	} else {
		files = append(files, "/run/kedge/edgecore.sock")
	}
	return filepath.Clean(dataDir), files, nil
}

func runReset(cmd *cobra.Command, f resetFlags) error {
	out := cmd.OutOrStdout()
	unit := filepath.Join(f.unitDir, UnitName)
	var remove []string
	if _, err := os.Lstat(unit); err == nil {
		remove = append(remove, unit)
	}
	if _, err := os.Lstat(unit + ".d"); err == nil {
		remove = append(remove, unit+".d")
	}
	dataDir, files, err := joinedPaths(f.config)
	switch {
	case err == nil:
		// Only a folder edgecore made: never /, a top-level folder, or one without edgecore's store.
		if strings.Count(dataDir, "/") < 2 {
			return fmt.Errorf("%s: data folder %s is too close to / to remove; remove it yourself", f.config, dataDir)
		}
		remove = append(remove, f.config, dataDir)
		for _, p := range files {
			if !strings.HasPrefix(p, dataDir+"/") {
				if _, err := os.Lstat(p); err == nil {
					remove = append(remove, p)
				}
			}
		}
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(out, "%s does not exist: no config or data to remove\n", f.config)
	default:
		return err
	}
	if len(remove) == 0 {
		fmt.Fprintln(out, "nothing to remove: edgecore is not installed here")
		return nil
	}
	sort.Strings(remove)
	fmt.Fprintln(out, "edgecore reset removes:")
	for _, p := range remove {
		fmt.Fprintln(out, "  "+p)
	}
	if !f.force {
		fmt.Fprint(out, "proceed? [y/N] ")
		line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("reset cancelled (pass --force to skip the question)")
		}
	}
	if systemdRunning() && f.unitDir == defaultUnitDir {
		for _, args := range [][]string{{"disable", "--now", UnitName}} {
			if b, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
				fmt.Fprintf(out, "systemctl %s: %v: %s (continuing)\n", strings.Join(args, " "), err, b)
			}
		}
	} else if len(remove) > 0 {
		fmt.Fprintln(out, "systemd is not managing this unit folder here: stop edgecore yourself if it runs")
	}
	var errs []error
	for _, p := range remove {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	// The config's folder goes too when reset emptied it (join made it).
	_ = os.Remove(filepath.Dir(f.config))
	if systemdRunning() && f.unitDir == defaultUnitDir {
		_ = exec.Command("systemctl", "daemon-reload").Run()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintln(out, "edgecore reset: done")
	return nil
}
