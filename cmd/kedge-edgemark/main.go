// Command kedge-edgemark runs many hollow edge nodes in one process against a cloudcore, to measure
// what one cloudcore holds (Kubernetes' kubemark, KubeEdge's edgemark). The nodes live in
// test/edgemark; this is the command around them.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/test/edgemark"
)

func main() {
	if err := command().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kedge-edgemark:", err)
		os.Exit(1)
	}
}

func command() *cobra.Command {
	var (
		o          edgemark.Options
		address    string
		certPort   int
		tokens     []string
		metrics    string
		progress   time.Duration
		logLevel   string
		runFor     time.Duration
		waitReady  bool
		capacity   string
		fdsPerNode int
	)
	cmd := &cobra.Command{
		Use:   "kedge-edgemark --cloudcore-address HOST --nodes N --token TOKEN",
		Short: "Run N hollow edge nodes in one process against a cloudcore",
		Long: `kedge-edgemark runs N hollow edge nodes in one process against a Kedge cloudcore, so you can
measure what one cloudcore holds (as Kubernetes' kubemark and KubeEdge's edgemark do). A hollow node
is an edgecore without containers, devices or disk:

  - it joins like 'edgecore join': the CA from the certificate server (:10002), checked against the
    token's hash, then a CSR signed for CN system:node:<name>. Give a token that allows N joins
    ('cloudcore token create --uses N'), or several (--token a,b: node i uses token i mod count). The
    certificates are kept under --cert-dir/<node>/, so a second run reuses them and needs no token
    (a node that holds a valid certificate cannot join again without a --replace token);
  - it holds its own mTLS websocket to cloudhub (:10000) on the Kedge lane (kedge.hub.v1), with
    websocket pings every --heartbeat (cloudhub's heartbeat must be the same, within a factor of 2);
  - on connect it sends its inventory (what it holds, so a reconnect costs the cloud nothing it
    already sent), then its node status at once and every --status-period (a hollow node never
    changes, so this is edgecore's nodestatus.unchangedInterval, 1m; KubeEdge's edgecore reports
    every 10s); the cloud turns it into Node status Ready=True and renews the Lease while it is connected;
  - it acknowledges every message from the cloud, after "storing" it in memory (pods, ConfigMaps,
    Secrets, Services); a pod bound to it is reported Running at once (all containers started,
    Ready) through the pod status path, a pod being deleted is confirmed so the API can remove it;
  - with --twin-period, it reports a twin of its device every period (edgecore's devicetwin sending a
    devicestatus update when its mapper reports): property temperature of Device
    <--twin-namespace>/<node name>, which must exist, bound to the node (hack/benchscale makes them);
  - its own messages (status and twin reports) are resent until the cloud acknowledges them (--ack-timeout);
  - a lost link is redialed after a random wait (full jitter) that doubles from --backoff-min up to
    --backoff-max, so a cloudcore restart is not met by every node at the same instant.

New connections (and joins) start at --rate per second; redials are paced by their jittered backoff only. Progress is printed every --progress; the
metrics (kedge_edgemark_*: nodes connected/reported, messages, resends, refusals, dial and ack
latency, pod start latency) are served on --metrics-address.

File descriptors: every node holds one socket. The command checks the limit before it starts and
refuses, saying what to raise, when --nodes does not fit. One client address reaches one cloudcore
port at most ~28,000 times (net.ipv4.ip_local_port_range); run several processes beyond that.`,
		Example: `  # on the cloud: a token for 1000 joins
  cloudcore token create --uses 1000 --ttl 2h
  kedge-edgemark --cloudcore-address 127.0.0.1 --nodes 1000 --rate 200 --token <token>
  # again later with the same nodes (their certificates are in --cert-dir)
  kedge-edgemark --cloudcore-address 127.0.0.1 --nodes 1000 --run-for 10m
  curl -s localhost:10360/metrics | grep kedge_edgemark_nodes`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			o.Logger = log
			if address == "" {
				return errors.New("--cloudcore-address is required (the host cloudcore's hub listens on)")
			}
			host, port := address, "10000"
			if h, p, err := net.SplitHostPort(address); err == nil {
				host, port = h, p
			}
			o.HubAddress = net.JoinHostPort(host, port)
			o.CertServer = net.JoinHostPort(host, fmt.Sprint(certPort))
			for _, t := range tokens {
				if t = strings.TrimSpace(t); t != "" {
					o.Tokens = append(o.Tokens, t)
				}
			}
			if capacity != "" {
				o.Capacity = map[string]string{}
				for _, kv := range strings.Split(capacity, ",") {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" || v == "" {
						return fmt.Errorf("--capacity %q: want name=quantity pairs, like cpu=4,memory=8Gi,pods=110", capacity)
					}
					o.Capacity[k] = v
				}
			}
			switch {
			case o.Nodes <= 0:
				return fmt.Errorf("--nodes %d: want at least 1", o.Nodes)
			case o.Rate <= 0:
				return fmt.Errorf("--rate %g: want a positive number of connections per second", o.Rate)
			case o.StatusPeriod < time.Second:
				return fmt.Errorf("--status-period %s: want at least 1s", o.StatusPeriod)
			case o.TwinPeriod != 0 && o.TwinPeriod < 100*time.Millisecond:
				return fmt.Errorf("--twin-period %s: want 0 (no twin reports) or at least 100ms", o.TwinPeriod)
			case o.Heartbeat < time.Second:
				return fmt.Errorf("--heartbeat %s: want at least 1s", o.Heartbeat)
			case o.BackoffMin <= 0 || o.BackoffMax < o.BackoffMin:
				return fmt.Errorf("--backoff-min %s / --backoff-max %s: want 0 < min <= max", o.BackoffMin, o.BackoffMax)
			}
			if err := edgemark.CheckFDs(o.Nodes, fdsPerNode); err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			o.Registerer = reg
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if metrics != "" {
				ln, err := net.Listen("tcp", metrics)
				if err != nil {
					return fmt.Errorf("--metrics-address: %w", err)
				}
				srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
			}
			sim, err := edgemark.Start(ctx, o)
			if err != nil {
				return err
			}
			defer sim.Stop()
			fmt.Fprintf(cmd.OutOrStdout(), "edgemark: %d hollow nodes %s-%05d..%s-%05d -> hub %s, certificates %s, %g connections/s\n",
				o.Nodes, o.Prefix, 0, o.Prefix, o.Nodes-1, o.HubAddress, o.CertServer, o.Rate)
			start := time.Now()
			tick := time.NewTicker(progress)
			defer tick.Stop()
			var deadline <-chan time.Time
			if runFor > 0 {
				t := time.NewTimer(runFor)
				defer t.Stop()
				deadline = t.C
			}
			allUp := false
			for {
				select {
				case <-ctx.Done():
					fmt.Fprintf(cmd.OutOrStdout(), "%6.1fs stopping: %s\n", time.Since(start).Seconds(), sim.Stats())
					return nil
				case <-deadline:
					fmt.Fprintf(cmd.OutOrStdout(), "%6.1fs --run-for over: %s\n", time.Since(start).Seconds(), sim.Stats())
					return nil
				case <-tick.C:
					st := sim.Stats()
					fmt.Fprintf(cmd.OutOrStdout(), "%6.1fs %s\n", time.Since(start).Seconds(), st)
					if !allUp && st.Reported == int64(o.Nodes) && st.Connected == int64(o.Nodes) {
						allUp = true
						fmt.Fprintf(cmd.OutOrStdout(), "%6.1fs all %d nodes connected and reported\n", time.Since(start).Seconds(), o.Nodes)
						if waitReady {
							return nil
						}
					}
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&address, "cloudcore-address", "", "host (or host:port) of cloudcore's hub; the port defaults to 10000")
	f.IntVar(&certPort, "cert-port", 10002, "port of cloudcore's certificate server on the same host (joins)")
	f.StringSliceVar(&tokens, "token", nil, "join token(s) from 'cloudcore token create --uses N'; node i uses token i mod count; not needed when every node's certificate is in --cert-dir")
	f.StringVar(&o.CertDir, "cert-dir", "_run/edgemark/certs", "keeps each node's ca.crt, node.crt, node.key in <dir>/<node>/ (reused by the next run)")
	f.IntVar(&o.Nodes, "nodes", 100, "hollow nodes to run")
	f.StringVar(&o.Prefix, "prefix", "hollow", "node names are <prefix>-00000, <prefix>-00001, ...")
	f.Float64Var(&o.Rate, "rate", 200, "new connections (and joins) per second")
	f.IntVar(&o.Burst, "burst", 0, "connections above --rate at once (0: a tenth of the rate)")
	f.IntVar(&o.JoinParallel, "join-parallel", 16, "joins in flight at once")
	f.DurationVar(&o.StatusPeriod, "status-period", time.Minute, "node status period (an unchanged report: edgecore's nodestatus.unchangedInterval; 10s is KubeEdge's edgecore)")
	f.DurationVar(&o.TwinPeriod, "twin-period", 0, "each node reports a twin of Device <twin-namespace>/<node> this often (0: no device traffic)")
	f.StringVar(&o.TwinNamespace, "twin-namespace", "default", "namespace of the hollow nodes' Devices")
	f.DurationVar(&o.Heartbeat, "heartbeat", 15*time.Second, "websocket ping period; must match cloudhub's heartbeat within a factor of 2")
	f.DurationVar(&o.AckTimeout, "ack-timeout", 15*time.Second, "resend an upstream message not acknowledged within this")
	f.DurationVar(&o.BackoffMin, "backoff-min", time.Second, "first redial wait bound (full jitter)")
	f.DurationVar(&o.BackoffMax, "backoff-max", 30*time.Second, "largest redial wait bound")
	f.StringVar(&capacity, "capacity", "cpu=4,memory=8Gi,pods=110", "what each node reports as capacity")
	f.StringVar(&metrics, "metrics-address", "127.0.0.1:10360", "serve Prometheus metrics here (empty: off)")
	f.DurationVar(&progress, "progress", 5*time.Second, "print a progress line this often")
	f.DurationVar(&runFor, "run-for", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	f.BoolVar(&waitReady, "exit-when-up", false, "exit once every node is connected and has reported (for scripts)")
	f.IntVar(&fdsPerNode, "fds-per-node", 1, "file descriptors each node needs in this process (1; 2 if the cloud runs in the same process)")
	f.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}
