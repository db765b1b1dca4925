// Command benchscale is `make bench-scale`: the hollow-node ladder against one cloudcore. For each
// size it starts a real kube-apiserver + etcd (test/k8senv), the cloudcore binary (cloudhub +
// edgecontroller) and the kedge-edgemark binary as separate processes, and measures:
//
//   - cloudcore RSS and CPU at idle with every node Ready, and bytes per node over its RSS before
//     the nodes came;
//   - API requests per second at idle, by verb and resource (apiserver_request_total; nothing but
//     cloudcore talks to the API server during the window);
//   - a pod per node created through the API: create -> Running and Ready in the API, p50/p99, and
//     the time from the last create to the last Running;
//   - a reconnect storm: cloudcore killed with SIGKILL and started again, time until every node is
//     connected again and has reported, nodes seen not Ready meanwhile, cloudcore's peak RSS, and
//     the API requests the storm cost;
//   - with -twin-period (default 5m): device traffic, devicecontroller on and a Device per node, each
//     hollow node reporting a twin per period; twin reports acknowledged per second at idle and the
//     device writes they cost.
//
// It prints a table row per size and, with -update, rewrites the generated table in BENCHMARKS.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/kedge-io/kedge/test/edgemark"
	"github.com/kedge-io/kedge/test/k8senv"
)

type config struct {
	sizes                []int
	bin                  string
	rate                 float64
	idle                 time.Duration
	statusPeriod         time.Duration
	leaseRenew           time.Duration
	heartbeat            time.Duration
	twinPeriod           time.Duration
	update               string
	command              string
	work                 string
	skipPods, skipStorm  bool
	apiProfile           time.Duration
	podParallel          int
	podRate              float64
	ctlQPS               float64
	statusRefresh        time.Duration
	ctlWorkers           int
	readyTimeout, stormT time.Duration
}

func main() {
	var c config
	var sizes string
	flag.StringVar(&sizes, "sizes", "1000,5000,10000", "comma-separated node counts, run in order (a failed size stops the ladder)")
	flag.StringVar(&c.bin, "bin", "_bin", "folder with cloudcore and kedge-edgemark")
	flag.Float64Var(&c.rate, "rate", 100, "edgemark connections per second")
	flag.DurationVar(&c.idle, "idle", 60*time.Second, "idle measurement window")
	flag.DurationVar(&c.statusPeriod, "status-period", time.Minute, "node status period of the hollow nodes (edgecore's nodestatus.unchangedInterval; 10s is KubeEdge's edgecore)")
	flag.DurationVar(&c.leaseRenew, "lease-renew", 10*time.Second, "edgecontroller leaseRenewInterval")
	flag.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "hub heartbeat (both ends)")
	flag.DurationVar(&c.twinPeriod, "twin-period", 5*time.Minute, "each hollow node reports a twin of its Device this often (devicecontroller runs, one Device per node); 0: no device traffic")
	flag.StringVar(&c.update, "update", "", "rewrite the generated scale table in this file (BENCHMARKS.md)")
	flag.StringVar(&c.command, "command", "make bench-scale", "the command named in the table")
	flag.StringVar(&c.work, "work", "_run/bench-scale", "working folder (PKI, certificates, logs)")
	flag.BoolVar(&c.skipPods, "skip-pods", false, "skip the pod phase")
	flag.BoolVar(&c.skipStorm, "skip-storm", false, "skip the reconnect storm")
	flag.DurationVar(&c.apiProfile, "apiserver-profile", 0, "take a CPU profile of the kube-apiserver this long from the start of the pod phase and of the storm (files apiserver-pods.pprof, apiserver-storm.pprof in the size's folder); 0: none")
	flag.IntVar(&c.podParallel, "pod-parallel", 32, "concurrent pod creates")
	flag.Float64Var(&c.podRate, "pod-rate", 0, "pod creates per second (paced, as a density test creates them); 0: as fast as -pod-parallel creates go")
	flag.DurationVar(&c.statusRefresh, "status-refresh", 5*time.Minute, "edgecontroller nodeStatusUpdateFrequency: an unchanged node status is written this often")
	flag.Float64Var(&c.ctlQPS, "controller-qps", 500, "qps of edgecontroller's and devicecontroller's API clients (burst twice that)")
	flag.IntVar(&c.ctlWorkers, "controller-workers", 64, "workers of edgecontroller and devicecontroller (each runs as many for its queue and for the edges' messages; a message waits for the API call of the one before it on its worker)")
	flag.DurationVar(&c.readyTimeout, "ready-timeout", 20*time.Minute, "how long the nodes may take to be Ready")
	flag.DurationVar(&c.stormT, "storm-timeout", 10*time.Minute, "how long the storm may take")
	flag.Parse()
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fatalf("-sizes %q: %q is not a positive count", sizes, s)
		}
		c.sizes = append(c.sizes, n)
	}
	var rows []string
	for _, n := range c.sizes {
		row, err := runSize(c, n)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchscale: %d nodes: %v\n", n, err)
			rows = append(rows, fmt.Sprintf("| %d | did not complete: %s |", n, oneLine(err.Error())))
			break
		}
		rows = append(rows, row)
		fmt.Println(header)
		fmt.Println(row)
	}
	if c.update != "" {
		if err := updateTable(c, rows); err != nil {
			fatalf("%v", err)
		}
	}
}

const header = `| nodes | cloudcore RSS idle | bytes/node | cloudcore CPU idle (cores) | apiserver+etcd CPU idle | API req/s idle (by verb resource) | pods create→Running p50 / p99 | last create→all Running | storm: all connected / all reported | NotReady in storm | storm peak RSS | storm API requests | twin reports idle: acked/s, device writes/s |
|---|---|---|---|---|---|---|---|---|---|---|---|---|`

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchscale: "+format+"\n", args...)
	os.Exit(1)
}

func oneLine(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "|", "/") }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a child process we measure.
type proc struct {
	cmd *exec.Cmd
	log *os.File
}

func start(logPath string, name string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	return &proc{cmd: cmd, log: f}, nil
}

func (p *proc) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.log.Close()
}

// rss is VmRSS of pid in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuSeconds is utime+stime of pid.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// pidsNamed finds processes by command name (the control plane envtest started).
func pidsNamed(names ...string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	me := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		comm := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
		ppid := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])[1]
		if ppid == me && slices.Contains(names, comm) {
			out = append(out, pid)
		}
	}
	return out
}

func sumCPU(pids []int) float64 {
	t := 0.0
	for _, p := range pids {
		t += cpuSeconds(p)
	}
	return t
}

// apiRequests reads apiserver_request_total summed by "verb resource" (subresource appended).
func apiRequests(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := line[strings.IndexByte(line, '{')+1 : strings.LastIndexByte(line, '}')]
		val, _ := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, '}')+1:]), 64)
		l := map[string]string{}
		for _, kv := range splitLabels(labels) {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		if l["resource"] == "" {
			continue // /metrics, /healthz, ...
		}
		key := strings.ToUpper(l["verb"]) + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		out[key] += val
	}
	return out, sc.Err()
}

func splitLabels(s string) []string {
	var out []string
	var cur strings.Builder
	inQ := false
	for _, r := range s {
		switch {
		case r == '"':
			inQ = !inQ
			cur.WriteRune(r)
		case r == ',' && !inQ:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func diff(a, b map[string]float64) (map[string]float64, float64) {
	d := map[string]float64{}
	total := 0.0
	for k, v := range b {
		if x := v - a[k]; x > 0 {
			d[k] = x
			total += x
		}
	}
	return d, total
}

func formatRates(d map[string]float64, secs float64) string {
	type kv struct {
		k string
		v float64
	}
	var l []kv
	total, writes := 0.0, 0.0
	for k, v := range d {
		l = append(l, kv{k, v})
		total += v
		if !strings.HasPrefix(k, "GET ") && !strings.HasPrefix(k, "LIST ") && !strings.HasPrefix(k, "WATCH ") {
			writes += v
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	parts := []string{fmt.Sprintf("**%.1f** (writes %.1f)", total/secs, writes/secs)}
	for _, x := range l {
		if x.v/secs >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.1f", x.k, x.v/secs))
		}
	}
	return strings.Join(parts, "; ")
}

// scrape reads a gauge or counter from a Prometheus text endpoint: the sum of its series, whatever
// their labels (cloudcore labels a module's metrics with the module's name).
func scrape(url, name string) (float64, error) {
	var total float64
	found := false
	err := series(url, name, func(_ string, v float64) { total, found = total+v, true })
	if err == nil && !found {
		err = fmt.Errorf("%s not in %s", name, url)
	}
	return total, err
}

// series calls each with the labels and value of every series of metric name at url.
func series(url, name string, each func(labels string, v float64)) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric whose name starts with this one, or a comment
		}
		labels := ""
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			each(labels, v)
		}
	}
	return nil
}

// queued sums cloudcore's mailbox depths (kedge_router_queued, by module) and names the modules
// with messages waiting.
func queued(url string) (float64, string) {
	var total float64
	var parts []string
	err := series(url, "kedge_router_queued", func(labels string, v float64) {
		if v <= 0 {
			return
		}
		total += v
		mod := labels
		if _, after, ok := strings.Cut(labels, `module="`); ok {
			mod, _, _ = strings.Cut(after, `"`)
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", mod, v))
	})
	if err != nil {
		return 0, " (metrics: " + err.Error() + ")"
	}
	if len(parts) == 0 {
		return total, ""
	}
	return total, " (" + strings.Join(parts, ", ") + ")"
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func runSize(c config, n int) (string, error) {
	ctx := context.Background()
	work, _ := filepath.Abs(filepath.Join(c.work, strconv.Itoa(n)))
	_ = os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return "", err
	}
	bin, _ := filepath.Abs(c.bin)
	logf("%d nodes: starting kube-apiserver + etcd (work folder %s)", n, work)
	env, err := k8senv.Start()
	if err != nil {
		return "", err
	}
	defer env.Stop()
	cpPids := pidsNamed("kube-apiserver", "etcd")
	cs := env.Client

	hubPort, certPort, adminPort, emPort := freePort(), freePort(), freePort(), freePort()
	// The grace period follows the renewal interval, as a cluster that renews Leases every minute must
	// raise kube-controller-manager's --node-monitor-grace-period: with edgecontroller's default 40 s
	// and leaseRenewInterval 60 s, a restarted leader marks every node whose Lease it has not seen move
	// for 40 s Ready=Unknown (3,319 marks among 10,000 nodes in a storm that took longer than that).
	grace := max(40*time.Second, 4*c.leaseRenew)
	cfg := fmt.Sprintf(`instance:
  name: bench
log:
  level: WARN
admin:
  address: 127.0.0.1:%d
  socket: %s/cloudcore.sock
  pprof: true
store:
  path: %s/cloudcore.db
  synchronous: normal
plugins:
  cacheDir: %s/wasm-cache
modules:
  cloudhub:
    address: 127.0.0.1:%d
    certServerAddress: 127.0.0.1:%d
    pkiDir: %s/pki
    heartbeat: %s
  edgecontroller:
    enable: true
    kubeconfig: %s
    leaseRenewInterval: %s
    leaseDuration: %s
    nodeGracePeriod: %s
    nodeStatusUpdateFrequency: %s
    qps: %g
    burst: %d
    workers: %d
`, adminPort, work, work, work, hubPort, certPort, work, c.heartbeat, env.Kubeconfig, c.leaseRenew, grace, grace, c.statusRefresh, c.ctlQPS, int(2*c.ctlQPS), c.ctlWorkers)
	twinArgs := []string{}
	if c.twinPeriod > 0 {
		// Device traffic: devicecontroller on, the device CRDs, a DeviceModel and a Device per node.
		cfg += fmt.Sprintf(`  devicecontroller:
    enable: true
    kubeconfig: %s
    qps: %g
    burst: %d
    workers: %d
`, env.Kubeconfig, c.ctlQPS, int(2*c.ctlQPS), c.ctlWorkers)
		if err := env.InstallCRDs(); err != nil {
			return "", err
		}
		names := make([]string, n)
		for i := range names {
			names[i] = edgemark.NodeName("hollow", i)
		}
		t := time.Now()
		if err := edgemark.CreateDevices(ctx, env.Config, "default", names, 32); err != nil {
			return "", err
		}
		logf("%d Devices created in %s (twin report every %s per node)", n, time.Since(t).Round(time.Second), c.twinPeriod)
		twinArgs = []string{"--twin-period", c.twinPeriod.String(), "--twin-namespace", "default"}
	}
	cfgPath := filepath.Join(work, "cloudcore.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	// Tokens: through the command users run; one per 1,000 nodes (a token's record lists the nodes that
	// used it, so one token for 10,000 would rewrite a growing record 10,000 times).
	var tokens []string
	per := 1000
	for i := 0; i < n; i += per {
		out, err := exec.Command(filepath.Join(bin, "cloudcore"), "token", "create", "--pki-dir", filepath.Join(work, "pki"),
			"--uses", strconv.Itoa(min(per, n-i)), "--ttl", "4h").Output()
		if err != nil {
			return "", fmt.Errorf("cloudcore token create: %w", err)
		}
		tokens = append(tokens, strings.TrimSpace(string(out)))
	}
	startCloud := func(tag string) (*proc, error) {
		p, err := start(filepath.Join(work, "cloudcore-"+tag+".log"), filepath.Join(bin, "cloudcore"), "--config", cfgPath)
		if err != nil {
			return nil, err
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hubPort)); err == nil {
				conn.Close()
				return p, nil
			}
			if time.Now().After(deadline) {
				p.kill()
				return nil, fmt.Errorf("cloudcore did not listen within 2m; see %s", p.log.Name())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	cloud, err := startCloud("1")
	if err != nil {
		return "", err
	}
	defer func() { cloud.kill() }()
	time.Sleep(5 * time.Second)
	baseRSS := rss(cloud.cmd.Process.Pid)
	logf("cloudcore up, RSS %s with no nodes; starting %d hollow nodes at %g/s", mib(baseRSS), n, c.rate)

	emArgs := append([]string{"--cloudcore-address", fmt.Sprintf("127.0.0.1:%d", hubPort), "--cert-port", strconv.Itoa(certPort),
		"--nodes", strconv.Itoa(n), "--rate", fmt.Sprint(c.rate), "--token", strings.Join(tokens, ","),
		"--cert-dir", filepath.Join(work, "certs"), "--metrics-address", fmt.Sprintf("127.0.0.1:%d", emPort),
		"--status-period", c.statusPeriod.String(), "--heartbeat", c.heartbeat.String(), "--progress", "10s"}, twinArgs...)
	em, err := start(filepath.Join(work, "edgemark.log"), filepath.Join(bin, "kedge-edgemark"), emArgs...)
	if err != nil {
		return "", err
	}
	defer em.kill()
	emURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", emPort)
	t0 := time.Now()
	if err := waitReady(ctx, cs, n, c.readyTimeout, emURL); err != nil {
		return "", err
	}
	// Settle: the ramp's backlog (statuses queued behind the API server) drains before the idle window.
	settle := max(20*time.Second, time.Duration(n/100)*time.Second)
	logf("all %d nodes Ready after %s; settling %s, then measuring idle for %s", n, time.Since(t0).Round(time.Second), settle, c.idle)
	time.Sleep(settle)
	// Idle means idle: cloudcore's mailboxes empty, not a backlog being worked off behind the API
	// server (whose CPU would be counted as idle CPU). Waits up to 5 more minutes, then says so.
	adminMetrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort)
	for waited := time.Duration(0); ; waited += 5 * time.Second {
		q, by := queued(adminMetrics)
		if q <= float64(n)/1000 {
			logf("idle: cloudcore's mailboxes hold %.0f messages%s after %s more", q, by, waited)
			break
		}
		if waited >= 5*time.Minute {
			logf("idle: cloudcore's mailboxes still hold %.0f messages%s after %s more: the API server does not keep up with the idle write rate; measuring anyway (not idle)", q, by, waited)
			break
		}
		time.Sleep(5 * time.Second)
	}

	// Idle.
	pid := cloud.cmd.Process.Pid
	a0, err := apiRequests(ctx, cs)
	if err != nil {
		return "", err
	}
	tw0, _ := scrape(emURL, "kedge_edgemark_twins_acked_total")
	down := []string{"kedge_cloudhub_downstream_sent_total", "kedge_cloudhub_downstream_resent_total", "kedge_cloudhub_downstream_acked_total"}
	down0 := make([]float64, len(down))
	for i, name := range down {
		down0[i], _ = scrape(adminMetrics, name)
	}
	c0, cp0, w0 := cpuSeconds(pid), sumCPU(cpPids), time.Now()
	var rssMax int64
	for end := time.Now().Add(c.idle); time.Now().Before(end); time.Sleep(time.Second) {
		rssMax = max(rssMax, rss(pid))
	}
	c1, cp1, secs := cpuSeconds(pid), sumCPU(cpPids), time.Since(w0).Seconds()
	a1, err := apiRequests(ctx, cs)
	if err != nil {
		return "", err
	}
	tw1, _ := scrape(emURL, "kedge_edgemark_twins_acked_total")
	idleRSS := rss(pid)
	gor, _ := scrape(adminMetrics, "go_goroutines")
	heap, _ := scrape(adminMetrics, "go_memstats_heap_inuse_bytes")
	stack, _ := scrape(adminMetrics, "go_memstats_stack_inuse_bytes")
	logf("idle: cloudcore %0.f goroutines (%.1f per node), heap in use %s, stacks %s (%.1f KiB per node)", gor, gor/float64(n), mib(int64(heap)), mib(int64(stack)), stack/float64(n)/1024)
	for _, prof := range []string{"heap", "goroutine", "profile?seconds=20", "goroutine?debug=2"} { // admin.pprof is on in this config
		name := strings.NewReplacer("profile?seconds=20", "cpu", "goroutine?debug=2", "goroutines.txt").Replace(prof)
		if !strings.HasSuffix(name, ".txt") {
			name += ".pprof"
		}
		if err := fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s", adminPort, prof), filepath.Join(work, "idle-"+name)); err != nil {
			logf("idle: %s profile: %v", name, err)
		}
	}
	logf("idle: heap, goroutine and 20 s CPU profiles of cloudcore in %s/idle-{heap,goroutine,cpu}.pprof (go tool pprof -sample_index=inuse_space -top ...), every goroutine's stack in idle-goroutines.txt", work)
	d, _ := diff(a0, a1)
	twinCol := "off"
	if c.twinPeriod > 0 {
		var devWrites float64
		for k, v := range d {
			if strings.Contains(k, " devices") && !strings.HasPrefix(k, "GET ") && !strings.HasPrefix(k, "LIST ") && !strings.HasPrefix(k, "WATCH ") {
				devWrites += v
			}
		}
		twinCol = fmt.Sprintf("%.1f, %.1f (every %s per node)", (tw1-tw0)/secs, devWrites/secs, c.twinPeriod)
		logf("idle: twin reports acked %.1f/s, device writes %.1f/s", (tw1-tw0)/secs, devWrites/secs)
	}
	var downRates []string
	for i, name := range down {
		v, _ := scrape(adminMetrics, name)
		downRates = append(downRates, fmt.Sprintf("%s %.1f/s", strings.TrimSuffix(strings.TrimPrefix(name, "kedge_cloudhub_downstream_"), "_total"), (v-down0[i])/secs))
	}
	pending, _ := scrape(adminMetrics, "kedge_cloudhub_downstream_pending")
	logf("idle: messages to the nodes: %s; %.0f pending (queued or awaiting an acknowledgement) at the end", strings.Join(downRates, ", "), pending)
	if q, by := queued(adminMetrics); q > float64(n)/1000 {
		logf("idle: at the window's end cloudcore's mailboxes hold %.0f messages%s: not idle, a backlog", q, by)
	}
	idleCPU, cpCPU := (c1-c0)/secs, (cp1-cp0)/secs
	perNode := (idleRSS - baseRSS) / int64(n)
	load, _ := os.ReadFile("/proc/loadavg")
	logf("idle: RSS %s (max %s), %d B/node, cloudcore %.3f cores, apiserver+etcd %.3f cores, load average %s, API %s", mib(idleRSS), mib(rssMax), perNode, idleCPU, cpCPU, strings.Join(strings.Fields(string(load))[:3], " "), formatRates(d, secs))

	podCol, lastCol := "skipped", "skipped"
	if !c.skipPods {
		profiled := c.profileAPIServer(ctx, cs, filepath.Join(work, "apiserver-pods.pprof"))
		cloudProfiled := c.profileCloudcore(adminPort, filepath.Join(work, "cloudcore-pods"))
		ph := startPhase(pid, cpPids)
		pa0, err := apiRequests(ctx, cs)
		if err != nil {
			return "", err
		}
		p50, p99, last, err := podPhase(ctx, cs, n, c.podParallel, c.podRate)
		if err != nil {
			return "", err
		}
		ph.log("pods")
		if pa1, err := apiRequests(ctx, cs); err == nil {
			pd, total := diff(pa0, pa1)
			logf("pods: %.0f API requests (%s)", total, topN(pd, 6))
		}
		<-profiled
		<-cloudProfiled
		podCol = fmt.Sprintf("%.2f s / %.2f s", p50.Seconds(), p99.Seconds())
		if c.podRate > 0 {
			podCol += fmt.Sprintf(" (created at %g/s)", c.podRate)
		} else {
			podCol += " (unpaced)"
		}
		lastCol = fmt.Sprintf("%.2f s", last.Seconds())
		logf("pods: create→Running p50 %s p99 %s, last create→all Running %s", p50, p99, last)
		time.Sleep(10 * time.Second)
	}

	stormCol, notReadyCol, peakCol, stormAPICol := "skipped", "skipped", "skipped", "skipped"
	if !c.skipStorm {
		// Watch Ready across the storm.
		wctx, stopWatch := context.WithCancel(ctx)
		var notReady sync.Map
		var watching sync.WaitGroup
		w, err := cs.CoreV1().Nodes().Watch(wctx, metav1.ListOptions{})
		if err != nil {
			stopWatch()
			return "", err
		}
		watching.Go(func() {
			for ev := range w.ResultChan() {
				if ev.Type != watch.Modified && ev.Type != watch.Added {
					continue
				}
				if node, ok := ev.Object.(*corev1.Node); ok && !nodeReady(node) {
					notReady.Store(node.Name, true)
				}
			}
		})
		s0, err := apiRequests(ctx, cs)
		if err != nil {
			stopWatch()
			return "", err
		}
		connects0, _ := scrape(emURL, "kedge_edgemark_connects_total")
		logf("storm: kill -9 cloudcore with %d nodes connected, start it again", n)
		_ = cloud.cmd.Process.Kill()
		_ = cloud.cmd.Wait()
		cloud.log.Close()
		ts := time.Now()
		profiled := c.profileAPIServer(ctx, cs, filepath.Join(work, "apiserver-storm.pprof"))
		cp0 := sumCPU(cpPids)
		if cloud, err = startCloud("2"); err != nil {
			stopWatch()
			return "", err
		}
		pid = cloud.cmd.Process.Pid
		ph := phase{pid: pid, cpPids: cpPids, t0: ts, cloud0: 0, cp0: cp0} // a new process: its CPU starts at 0
		if c.apiProfile > 0 {                                              // where cloudcore's goroutines wait in the middle of the storm
			go func() {
				time.Sleep(c.apiProfile)
				path := filepath.Join(work, "cloudcore-storm-goroutine.pprof")
				if err := fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine", adminPort), path); err != nil {
					logf("storm goroutine profile: %v", err)
				}
			}()
		}
		var peak atomic.Int64
		sampling := make(chan struct{})
		go func() {
			for {
				peak.Store(max(peak.Load(), rss(pid)))
				select {
				case <-sampling:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		var allConnected, allReported time.Duration
		deadline := time.Now().Add(c.stormT)
		for allReported == 0 {
			conn, _ := scrape(emURL, "kedge_edgemark_nodes_connected")
			connects, _ := scrape(emURL, "kedge_edgemark_connects_total")
			rep, _ := scrape(emURL, "kedge_edgemark_nodes_reported_on_link")
			if allConnected == 0 && conn == float64(n) && connects-connects0 >= float64(n) {
				allConnected = time.Since(ts)
			}
			if allConnected != 0 && rep == float64(n) {
				allReported = time.Since(ts)
			}
			if time.Now().After(deadline) {
				close(sampling)
				stopWatch()
				return "", fmt.Errorf("storm: %v of %d nodes connected again, %v reported, after %s", conn, n, rep, c.stormT)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err := waitReady(ctx, cs, n, c.stormT, emURL); err != nil {
			close(sampling)
			stopWatch()
			return "", err
		}
		close(sampling)
		ph.log("storm")
		<-profiled
		s1, err := apiRequests(ctx, cs)
		stopWatch()
		watching.Wait()
		if err != nil {
			return "", err
		}
		sd, total := diff(s0, s1)
		cnt := 0
		notReady.Range(func(any, any) bool { cnt++; return true })
		stormCol = fmt.Sprintf("%.1f s / %.1f s", allConnected.Seconds(), allReported.Seconds())
		notReadyCol = strconv.Itoa(cnt)
		peakCol = mib(peak.Load())
		stormAPICol = fmt.Sprintf("%.0f (%s)", total, topN(sd, 4))
		logf("storm: all connected after %s, all reported (status acknowledged on the new link) after %s, %d nodes seen not Ready, peak RSS %s, API requests %s", allConnected, allReported, cnt, peakCol, stormAPICol)
	}
	return fmt.Sprintf("| %d | %s | %s | %.3f | %.2f | %s | %s | %s | %s | %s | %s | %s | %s |", n, mib(idleRSS), fmt.Sprintf("%.1f KiB", float64(perNode)/1024),
		idleCPU, cpCPU, formatRates(d, secs), podCol, lastCol, stormCol, notReadyCol, peakCol, stormAPICol, twinCol), nil
}

func topN(d map[string]float64, k int) string {
	type kv struct {
		k string
		v float64
	}
	var l []kv
	for a, b := range d {
		l = append(l, kv{a, b})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	var parts []string
	for i := 0; i < len(l) && i < k; i++ {
		parts = append(parts, fmt.Sprintf("%s %.0f", l[i].k, l[i].v))
	}
	return strings.Join(parts, ", ")
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func waitReady(ctx context.Context, cs kubernetes.Interface, n int, timeout time.Duration, emURL string) error {
	deadline := time.Now().Add(timeout)
	last := time.Time{}
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		ready := 0
		if err == nil {
			for i := range list.Items {
				if nodeReady(&list.Items[i]) {
					ready++
				}
			}
		}
		if ready >= n {
			return nil
		}
		if time.Since(last) > 10*time.Second {
			conn, _ := scrape(emURL, "kedge_edgemark_nodes_connected")
			rep, _ := scrape(emURL, "kedge_edgemark_nodes_reported")
			logf("  %d/%d Ready in the API; edgemark: %v connected, %v reported", ready, n, conn, rep)
			last = time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d nodes Ready after %s", ready, n, timeout)
		}
		time.Sleep(time.Second)
	}
}

// podPhase creates a pod per node and measures create -> Running+Ready as the API shows it.
func podPhase(ctx context.Context, cs kubernetes.Interface, n, parallel int, perSecond float64) (p50, p99, last time.Duration, err error) {
	ns := "bench"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return 0, 0, 0, err
	}
	var mu sync.Mutex
	created := map[string]time.Time{}
	running := map[string]time.Time{}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wctx.Err() == nil { // the API server ends watches now and then (and more under load): watch again
			w, err := cs.CoreV1().Pods(ns).Watch(wctx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || p.Status.Phase != corev1.PodRunning {
					continue
				}
				readyCond := false
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						readyCond = true
					}
				}
				if !readyCond {
					continue
				}
				mu.Lock()
				if _, ok := running[p.Name]; !ok {
					running[p.Name] = time.Now()
				}
				full := len(running) == n
				mu.Unlock()
				if full {
					w.Stop()
					return
				}
			}
		}
	}()
	pace := rate.NewLimiter(rate.Inf, 1)
	if perSecond > 0 {
		pace = rate.NewLimiter(rate.Limit(perSecond), 1)
		logf("pods: creating %d (one per node, %d at a time, %g per second)", n, parallel, perSecond)
	} else {
		logf("pods: creating %d (one per node, %d at a time, unpaced)", n, parallel)
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range parallel {
		wg.Go(func() {
			for i := range jobs {
				if err := pace.Wait(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				name := fmt.Sprintf("p-%05d", i)
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec: corev1.PodSpec{NodeName: fmt.Sprintf("hollow-%05d", i), AutomountServiceAccountToken: new(false),
						Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
				t := time.Now()
				mu.Lock()
				created[name] = t
				mu.Unlock()
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	lastCreate := time.Now()
	if e := firstErr.Load(); e != nil {
		return 0, 0, 0, fmt.Errorf("pod create: %v", e)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		mu.Lock()
		got := len(running)
		mu.Unlock()
		return 0, 0, 0, fmt.Errorf("only %d of %d pods Running after 10m", got, n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(running) == 0 {
		return 0, 0, 0, errors.New("no pod seen Running")
	}
	var lat []time.Duration
	var lastRun time.Time
	for name, t := range running {
		lat = append(lat, t.Sub(created[name]))
		if t.After(lastRun) {
			lastRun = t
		}
	}
	slices.Sort(lat)
	return lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)], max(lastRun.Sub(lastCreate), 0), nil
}

const (
	beginMark = "<!-- bench-scale:begin (generated by make bench-scale) -->"
	endMark   = "<!-- bench-scale:end -->"
)

func updateTable(c config, rows []string) error {
	b, err := os.ReadFile(c.update)
	if err != nil {
		return err
	}
	cpu := "unknown CPU"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	block := fmt.Sprintf("%s\n`%s` (%s), %s, %d cores, load %s when it ended; hollow nodes: status every %s, heartbeat %s, leaseRenewInterval %s (leaseDuration and nodeGracePeriod 4× that, at least 40 s), nodeStatusUpdateFrequency %s, edgecontroller/devicecontroller workers %d and qps %g, connection rate %g/s, twin report per node every %s (0: none), pods created %s.\n\n%s\n%s\n%s",
		beginMark, c.command, time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpu, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "),
		c.statusPeriod, c.heartbeat, c.leaseRenew, c.statusRefresh, c.ctlWorkers, c.ctlQPS, c.rate, c.twinPeriod, podPace(c.podRate), header, strings.Join(rows, "\n"), endMark)
	s := string(b)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q block", c.update, beginMark, endMark)
	}
	s = s[:i] + block + s[j+len(endMark):]
	return os.WriteFile(c.update, []byte(s), 0o644)
}

// phase measures where the CPU went during a phase: cloudcore's against the API server's and etcd's,
// with the machine's load average (other work on the machine competes for the same cores).
type phase struct {
	pid         int
	cpPids      []int
	t0          time.Time
	cloud0, cp0 float64
}

func startPhase(pid int, cpPids []int) phase {
	return phase{pid: pid, cpPids: cpPids, t0: time.Now(), cloud0: cpuSeconds(pid), cp0: sumCPU(cpPids)}
}

func (p phase) log(name string) {
	secs := time.Since(p.t0).Seconds()
	cloud, cp := cpuSeconds(p.pid)-p.cloud0, sumCPU(p.cpPids)-p.cp0
	load, _ := os.ReadFile("/proc/loadavg")
	logf("%s: %.0f s; CPU cloudcore %.2f cores, apiserver+etcd %.2f cores (of %d); load average %s", name, secs, cloud/secs, cp/secs, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
}

// profileAPIServer takes a CPU profile of the kube-apiserver for c.apiProfile (its /debug/pprof, on by
// default) into path; the channel is closed when it is written (at once when profiling is off).
func (c config) profileAPIServer(ctx context.Context, cs kubernetes.Interface, path string) <-chan struct{} {
	done := make(chan struct{})
	if c.apiProfile <= 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		b, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(int(c.apiProfile.Seconds()))).Timeout(c.apiProfile + time.Minute).DoRaw(ctx)
		if err != nil {
			logf("apiserver profile: %v", err)
			return
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			logf("apiserver profile: %v", err)
			return
		}
		logf("apiserver CPU profile (%s) in %s: go tool pprof -top %s", c.apiProfile, path, path)
	}()
	return done
}

func podPace(perSecond float64) string {
	if perSecond > 0 {
		return fmt.Sprintf("at %g/s", perSecond)
	}
	return "unpaced"
}

// profileCloudcore takes a CPU profile of cloudcore for c.apiProfile into prefix.pprof and its
// goroutines halfway through into prefix-goroutine.pprof; the channel is closed when both are written
// (at once when profiling is off).
func (c config) profileCloudcore(adminPort int, prefix string) <-chan struct{} {
	done := make(chan struct{})
	if c.apiProfile <= 0 {
		close(done)
		return done
	}
	base := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", adminPort)
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(c.apiProfile / 2)
			if err := fetch(base+"goroutine", prefix+"-goroutine.pprof"); err != nil {
				logf("cloudcore goroutine profile: %v", err)
			}
		})
		if err := fetch(fmt.Sprintf("%sprofile?seconds=%d", base, int(c.apiProfile.Seconds())), prefix+".pprof"); err != nil {
			logf("cloudcore profile: %v", err)
		}
		wg.Wait()
		logf("cloudcore CPU profile (%s) in %s.pprof, goroutines in %s-goroutine.pprof", c.apiProfile, prefix, prefix)
	}()
	return done
}

// fetch writes what url serves to path.
func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
