package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/modules"
)

// moduleCommand talks to a running daemon over its control socket.
func moduleCommand(spec Spec) *cobra.Command {
	var f flags
	var socket string
	cmd := &cobra.Command{
		Use:   "module",
		Short: "List and hot-swap the modules of a running " + spec.Binary,
		Long: `module talks to a running ` + spec.Binary + ` over its control socket (admin.socket; only the user
running ` + spec.Binary + ` can open it).

A swap replaces a running module without stopping ` + spec.Binary + `: the new instance starts beside the
old one and is health-checked until healthy, up to --health-timeout (default: admin.swapHealthTimeout,
10s), while the old one keeps handling messages; then delivery switches between two messages, queued messages
continue in order into the new instance, and the old one stops. If the new one fails, the old one keeps
running. A swap does not edit the config file: to keep the change across restarts, edit the file (which
` + spec.Binary + ` also watches: saving it swaps changed modules the same way).`,
	}
	cmd.PersistentFlags().StringVarP(&f.config, "config", "c", "", "config file naming the control socket (admin.socket)")
	cmd.PersistentFlags().StringArrayVar(&f.sets, "set", nil, "override one setting, as for run")
	cmd.PersistentFlags().StringVar(&socket, "socket", "", "control socket path (default: admin.socket from the config)")
	client := func() (*http.Client, error) {
		path := socket
		if path == "" {
			cfg, _, err := Load(spec, f.config, f.sets, os.Environ())
			if err != nil {
				return nil, &exitError{ExitConfig, err}
			}
			path = cfg.base().Admin.Socket
		}
		return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				conn, err := d.DialContext(ctx, "unix", path)
				if err != nil {
					return nil, fmt.Errorf("%w (is %s running? is admin.socket %s?)", err, spec.Binary, path)
				}
				return conn, nil
			}}}, nil
	}

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List running modules: runtime, version, health, messages handled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var st []modules.Status
			if err := call(cmd.Context(), c, http.MethodGet, "/v1/modules", nil, &st); err != nil {
				return &exitError{ExitFailure, err}
			}
			writeModuleTable(cmd.OutOrStdout(), st)
			return nil
		},
	}

	var req swapRequest
	var runtime string
	var healthTimeout time.Duration
	swap := &cobra.Command{
		Use:   "swap NAME --runtime builtin|process|wasm [--path FILE --sha256 HEX]",
		Short: "Replace a running module with another runtime or plugin file, without a restart",
		Example: `  ` + spec.Binary + ` module swap modbus --runtime wasm --path /opt/kedge/modbus-v2.wasm --sha256 $(sha256sum /opt/kedge/modbus-v2.wasm | cut -d' ' -f1)
  ` + spec.Binary + ` module swap modbus --runtime builtin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Runtime = modules.Runtime(runtime)
			if cmd.Flags().Changed("health-timeout") {
				if healthTimeout <= 0 {
					return &exitError{ExitConfig, fmt.Errorf("--health-timeout must be positive, got %s", healthTimeout)}
				}
				req.HealthTimeout = healthTimeout.String()
			}
			c, err := client()
			if err != nil {
				return err
			}
			// The preparation (a WASM compile, up to plugins.prepareTimeout), the start and the health wait.
			c.Timeout = max(c.Timeout, modules.DefaultPrepareTimeout+healthTimeout+time.Minute)
			var rep modules.SwapReport
			if err := call(cmd.Context(), c, http.MethodPost, "/v1/modules/"+args[0]+"/swap", req, &rep); err != nil {
				return &exitError{ExitFailure, err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "swapped %s: %s -> %s; delivery paused %s with %d messages queued (handed to the new instance in order); "+
				"the new instance was prepared in %s and started in %s while the old one served\n",
				rep.Module, rep.From, rep.To, rep.Paused, rep.Queued, rep.Prepared.Round(time.Millisecond), rep.Started.Round(time.Millisecond))
			fmt.Fprintln(cmd.OutOrStdout(), "not written to the config file: edit it to keep this across restarts")
			return nil
		},
	}
	swap.Flags().StringVar(&runtime, "runtime", "", "builtin, process or wasm (required)")
	swap.Flags().StringVar(&req.Path, "path", "", "plugin file (process or wasm)")
	swap.Flags().StringVar(&req.SHA256, "sha256", "", "the plugin file's SHA-256 (process or wasm)")
	swap.Flags().DurationVar(&healthTimeout, "health-timeout", 0, "how long the new instance may take to become healthy before the swap is rolled back (default: admin.swapHealthTimeout)")
	_ = swap.MarkFlagRequired("runtime")

	cmd.AddCommand(ls, swap)
	return cmd
}

// writeModuleTable prints `module ls`: VERSION is the release that runs (the host's for builtin, the
// plugin's own or "-"), SHA256 the pinned plugin file's prefix ("-" for builtin).
func writeModuleTable(w io.Writer, st []modules.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tGROUP\tRUNTIME\tVERSION\tSHA256\tHEALTH\tHANDLED\tFAILED\tQUEUED\tSWAPS")
	for _, s := range st {
		health := "ok"
		if s.Health != "" {
			health = "unhealthy: " + s.Health
		} else if strings.HasPrefix(s.Link, "down") {
			health = "ok (link " + s.Link + ")"
		}
		release, sum := s.Release, s.SHA256
		if release == "" { // a daemon from before Release: its combined form
			release = s.Version
		}
		if sum == "" {
			sum = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%d\t%.0f\n", s.Name, s.Group, s.Runtime, release, sum, health, s.Handled, s.Failed, s.Queued, s.Swaps)
	}
	_ = tw.Flush()
}
