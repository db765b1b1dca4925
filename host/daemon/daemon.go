// Package daemon is what cloudcore and edgecore share: the cobra command, config loading (defaults,
// file, KEDGE_ environment, --set flags), the store, the router, the module manager, the admin HTTP
// server and a bounded graceful shutdown on SIGTERM/SIGINT.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

// Version is stamped at build time (-ldflags "-X github.com/kedge-io/kedge/host/daemon.Version=...").
var Version = "dev"

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the daemon failed while running
	ExitConfig  = 2 // the configuration is wrong; the message says where
)

// EnvPrefix starts every environment override: KEDGE_NODE__NAME=edge-1 sets node.name.
const EnvPrefix = "KEDGE_"

// Spec describes one binary.
type Spec struct {
	Binary    string // "cloudcore" or "edgecore"
	Short     string
	Long      string
	Example   string
	NewConfig func() Config // returns the defaults
	// Commands are extra subcommands of this binary (e.g. edgecore join, cloudcore token).
	Commands []*cobra.Command
}

type flags struct {
	config        string
	sets          []string
	defaultConfig bool
	minConfig     bool
}

// Main runs the binary's command line and returns the process exit code.
func Main(spec Spec, args []string) int {
	cmd := Command(spec)
	cmd.SetArgs(args)
	err := cmd.Execute()
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		if ee.err != nil {
			printErrors(spec.Binary, ee.err)
		}
		return ee.code
	default: // cobra usage errors (unknown flag, bad argument)
		fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Binary, err)
		return ExitConfig
	}
}

// printErrors writes err to stderr, one line per joined error (every bad module setting is reported,
// each as "<file>: modules.<name>.<key>: <problem>"), each line prefixed with the binary's name.
func printErrors(binary string, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printErrors(binary, e)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", binary, err)
}

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return fmt.Sprintf("exit %d: %v", e.code, e.err) }

// Command builds the cobra command tree: run (the default), version.
func Command(spec Spec) *cobra.Command {
	var f flags
	var showVersion bool
	versionLine := fmt.Sprintf("%s %s (%s, %s/%s)\n", spec.Binary, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	root := &cobra.Command{
		Use:           spec.Binary,
		Short:         spec.Short,
		Long:          spec.Long,
		Example:       spec.Example,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				_, err := io.WriteString(cmd.OutOrStdout(), versionLine)
				return err
			}
			return runCommand(cmd.Context(), spec, f, cmd.OutOrStdout())
		},
	}
	// --version prints the same first line as the version command (packaging checks run it). It is
	// this flag rather than cobra's Version field: cobra renders that with text/template, whose
	// reflective method calls make the linker keep every exported method of every type in the binary
	// (about 10% of an edgecore; see BENCHMARKS.md "Device classes").
	root.Flags().BoolVarP(&showVersion, "version", "v", false, "print the version line and exit")
	addRunFlags(root, &f)
	run := &cobra.Command{
		Use:   "run",
		Short: "Run " + spec.Binary + " (the default command)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCommand(cmd.Context(), spec, f, cmd.OutOrStdout())
		},
	}
	addRunFlags(run, &f)
	version := &cobra.Command{
		Use:   "version",
		Short: "Print the version and the modules compiled into this binary",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			_, _ = io.WriteString(cmd.OutOrStdout(), versionLine)
			for _, info := range sdk.Registered() {
				fmt.Fprintf(cmd.OutOrStdout(), "  module %-16s group %-10s %s\n", info.Name, info.Group, info.Doc)
			}
		},
	}
	var vf flags
	validate := &cobra.Command{
		Use:     "validate",
		Short:   "Check a config (file, KEDGE_ environment, --set) without starting; exit 0 if valid, 2 if not",
		Example: "  " + spec.Binary + " validate --config /etc/kedge/" + spec.Binary + ".yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, plan, err := Load(spec, vf.config, vf.sets, os.Environ())
			if err != nil {
				return &exitError{ExitConfig, err}
			}
			names := make([]string, len(plan))
			for i, p := range plan {
				names[i] = p.Info.Name
			}
			fmt.Fprintf(cmd.OutOrStdout(), "config is valid; modules in start order: %s\n", strings.Join(names, ", "))
			return nil
		},
	}
	validate.Flags().StringVarP(&vf.config, "config", "c", "", "YAML config file to check")
	validate.Flags().StringArrayVar(&vf.sets, "set", nil, "override one setting, as for run")
	root.AddCommand(run, version, validate, inspectCommand(spec), moduleCommand(spec))
	root.AddCommand(spec.Commands...)
	return root
}

func addRunFlags(cmd *cobra.Command, f *flags) {
	fl := cmd.Flags()
	fl.StringVarP(&f.config, "config", "c", "", "YAML config file; without it the built-in defaults are used (see --defaultconfig)")
	fl.StringArrayVar(&f.sets, "set", nil, "override one setting, e.g. --set log.level=debug --set modules.NAME.enable=false (repeatable; wins over the file and KEDGE_ environment variables)")
	fl.BoolVar(&f.defaultConfig, "defaultconfig", false, "print the full default config, every setting commented, and exit")
	fl.BoolVar(&f.minConfig, "minconfig", false, "print a minimal config to start from, and exit")
}

func runCommand(ctx context.Context, spec Spec, f flags, stdout io.Writer) error {
	if f.defaultConfig || f.minConfig {
		out, err := renderConfig(spec.NewConfig(), sdk.Registered(), f.minConfig)
		if err != nil {
			return &exitError{ExitFailure, err}
		}
		_, err = stdout.Write(out)
		return err
	}
	cfg, plan, err := Load(spec, f.config, f.sets, os.Environ())
	if err != nil {
		return &exitError{ExitConfig, err}
	}
	if err := Run(ctx, spec, cfg, plan, f.config, f.sets); err != nil {
		return &exitError{ExitFailure, err}
	}
	return nil
}

// Load builds the effective config: defaults < file < KEDGE_ environment < --set, and plans the modules.
func Load(spec Spec, path string, sets, environ []string) (Config, []modules.Planned, error) {
	cfg := spec.NewConfig()
	tree, source := map[string]any{}, "defaults"
	if path != "" {
		var err error
		if tree, err = config.LoadFile(path); err != nil {
			return nil, nil, err
		}
		source = path
	}
	ov := config.EnvOverrides(EnvPrefix, environ)
	setOv, err := config.ParseSet(sets)
	if err != nil {
		return nil, nil, err
	}
	ov = ov.Merge(setOv)
	if err := config.Decode(source, tree, "", &ov, cfg); err != nil {
		return nil, nil, err
	}
	if v, ok := cfg.(interface{ Validate(source string) error }); ok {
		if err := v.Validate(source); err != nil {
			ov.Attribute(err)
			return nil, nil, err
		}
	}
	if err := cfg.base().validate(source); err != nil {
		ov.Attribute(err)
		return nil, nil, err
	}
	plan, err := modules.Plan(source, tree, &ov, sdk.Registered(), loaders(cfg.base()))
	if err != nil {
		ov.Attribute(err) // a module's Validate names the file; the bad value may come from elsewhere
		return nil, nil, err
	}
	if unused := ov.Unused(); len(unused) > 0 {
		return nil, nil, unused[0]
	}
	return cfg, plan, nil
}

func (b *Base) validate(source string) error {
	switch {
	case b.Log.Format != "text" && b.Log.Format != "json":
		return &config.Error{Source: source, Key: "log.format", Problem: fmt.Sprintf("expected text or json, got %q", b.Log.Format)}
	case b.Store.Synchronous != "full" && b.Store.Synchronous != "normal":
		return &config.Error{Source: source, Key: "store.synchronous", Problem: fmt.Sprintf("expected full or normal, got %q", b.Store.Synchronous)}
	case b.Store.Path == "":
		return &config.Error{Source: source, Key: "store.path", Problem: "must not be empty"}
	case b.ShutdownTimeout <= 0:
		return &config.Error{Source: source, Key: "shutdownTimeout", Problem: "must be positive"}
	case b.Mailbox <= 0:
		return &config.Error{Source: source, Key: "mailbox", Problem: "must be positive"}
	case b.Admin.SwapHealthTimeout <= 0:
		return &config.Error{Source: source, Key: "admin.swapHealthTimeout", Problem: fmt.Sprintf("must be positive, got %s", b.Admin.SwapHealthTimeout)}
	case b.Store.CacheKiB < 0:
		return &config.Error{Source: source, Key: "store.cacheKiB", Problem: fmt.Sprintf("must be 0 (SQLite's default) or a size in KiB, got %d", b.Store.CacheKiB)}
	case b.Admin.Pprof && !pprofBuilt:
		return &config.Error{Source: source, Key: "admin.pprof", Problem: "this build has no profiler (a release class build, tag kedge_nopprof); use a plain go build to profile"}
	case b.Plugins.PrepareTimeout <= 0:
		return &config.Error{Source: source, Key: "plugins.prepareTimeout", Problem: fmt.Sprintf("must be positive, got %s", b.Plugins.PrepareTimeout)}
	}
	if err := b.Runtime.validate(source); err != nil {
		return err
	}
	if b.Admin.Address != "" {
		if _, _, err := net.SplitHostPort(b.Admin.Address); err != nil {
			return &config.Error{Source: source, Key: "admin.address", Problem: fmt.Sprintf("expected host:port, got %q", b.Admin.Address)}
		}
	}
	return nil
}

// Run runs the host until ctx ends or SIGTERM/SIGINT arrives, then shuts down within ShutdownTimeout.
// path and sets are where cfg came from, for reloads.
func Run(ctx context.Context, spec Spec, cfg Config, plan []modules.Planned, path string, sets []string) error {
	b := cfg.base()
	log := newLogger(b.Log, os.Stderr).With("binary", spec.Binary)
	slog.SetDefault(log)
	b.Runtime.apply(log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := os.MkdirAll(filepath.Dir(b.Store.Path), 0o700); err != nil {
		return fmt.Errorf("store.path %s: create its folder: %w", b.Store.Path, err)
	}
	db, err := store.Open(b.Store.Path, store.Options{Synchronous: b.Store.Synchronous, CacheKiB: b.Store.CacheKiB, Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()

	reg := newRegistry(spec.Binary)
	rt := router.New(reg)
	mgr := modules.NewManager(modules.Deps{
		NodeName: cfg.Identity(), Router: rt, Store: db, Logger: log, Metrics: reg,
		StopTimeout: b.ShutdownTimeout, Mailbox: b.Mailbox, SwapHealthTimeout: b.Admin.SwapHealthTimeout,
		PrepareTimeout: b.Plugins.PrepareTimeout,
	})
	var admin *adminServer
	if b.Admin.Address != "" {
		if admin, err = startAdmin(b.Admin.Address, b.Admin.Pprof, reg, mgr, log); err != nil {
			return err
		}
	}
	modules.Version = Version
	log.Info("starting", "version", Version, "identity", cfg.Identity(), "store", b.Store.Path, "modules", len(plan))
	if err := mgr.Start(ctx, plan); err != nil {
		if admin != nil {
			admin.close(context.Background())
		}
		if ctx.Err() != nil { // SIGTERM/SIGINT while modules were starting: a requested stop, not a failure
			log.Info("stopped while starting", "err", err)
			return nil
		}
		return err
	}
	ctl := &controller{spec: spec, mgr: mgr, log: log, path: path, sets: sets, current: cfg}
	mgr.SetSwapper(ctl.swap) // modules swap through their host handle (sdk.ModuleSwapper), serialised with the socket's
	if b.Admin.Socket != "" {
		closeControl, err := serveControl(ctx, b.Admin.Socket, ctl)
		if err != nil {
			_ = mgr.Stop(context.WithoutCancel(ctx))
			return err
		}
		defer closeControl()
	}
	if b.Admin.Reload {
		if err := ctl.watch(ctx); err != nil {
			log.Warn("config changes will not be applied while running", "err", err)
		}
	}
	log.Info("running", "modules", mgr.Running())
	<-ctx.Done()
	stop() // a second signal now kills the process the default way
	log.Info("shutting down", "timeout", b.ShutdownTimeout)

	// One deadline for everything; past it, exit anyway so a stuck module never hangs a node's restart.
	shutdown, cancel := context.WithTimeout(context.Background(), b.ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		mgr.Drain(shutdown) // hand work over while every module still runs (cloudhub: nodes to other replicas)
		err := mgr.Stop(shutdown)
		if admin != nil {
			admin.close(shutdown)
		}
		done <- err
	}()
	select {
	case err := <-done:
		closeLoaders()
		if err != nil {
			log.Error("shutdown finished with errors", "err", err)
			return err
		}
		log.Info("stopped")
		return nil
	case <-time.After(b.ShutdownTimeout + time.Second):
		return fmt.Errorf("shutdown did not finish within %s; exiting anyway", b.ShutdownTimeout)
	}
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
