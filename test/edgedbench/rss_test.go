package edgedbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/test/crienv"
)

const benchNode = "edgedbench"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

// edgecoreBinary builds ./cmd/edgecore once per test process into a temp dir, or returns the
// executable named by EDGEDBENCH_EDGECORE (e.g. a class's release build, _bin/release/edgecore-full-amd64).
func edgecoreBinary(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("EDGEDBENCH_EDGECORE"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			b.Fatal(err)
		}
		return abs
	}
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if binDir, buildErr = os.MkdirTemp("", "edgedbench-bin-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "edgecore")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./cmd/edgecore")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/edgecore: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// seedPods writes n pods into a fresh edgecore store the way metamanager keeps them (its namespace,
// type pod), so edged starts them when edgecore starts: there is no cloud in this benchmark.
func seedPods(b *testing.B, dbPath, ns string, n int) {
	b.Helper()
	db, err := store.Open(dbPath, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	objs := make([]store.Object, 0, n)
	for i := range n {
		p := busybox(ns, fmt.Sprintf("p%02d", i))
		p.Spec.NodeName = benchNode
		v, err := json.Marshal(p)
		if err != nil {
			b.Fatal(err)
		}
		objs = append(objs, store.Object{Key: store.Key{Type: "pod", Namespace: ns, Name: p.Name}, Value: v})
	}
	if len(objs) > 0 {
		if _, err := db.Objects("metamanager").PutBatch(context.Background(), objs); err != nil {
			b.Fatal(err)
		}
	}
}

// anonRSS reads a process's anonymous resident memory (RssAnon: heap, stacks, C allocations; the
// rest of VmRSS is the mapped executable) in KiB.
func anonRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// vmRSS reads a process's resident set (VmRSS) and peak (VmHWM) in KiB from /proc/<pid>/status.
func vmRSS(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(fields[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(fields[1], 10, 64)
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, sc.Err()
}

// settle samples VmRSS every 250 ms until 8 samples in a row (2 s) stay within 2% of each other, or
// 30 s pass; it returns the last sample and the peak.
func settle(pid int) (rss, hwm int64, err error) {
	var window []int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, h, err := vmRSS(pid)
		if err != nil {
			return 0, 0, err
		}
		window = append(window, r)
		if len(window) > 8 {
			window = window[1:]
		}
		if len(window) == 8 {
			lo, hi := window[0], window[0]
			for _, v := range window {
				lo, hi = min(lo, v), max(hi, v)
			}
			if float64(hi-lo) <= 0.02*float64(hi) {
				return r, h, nil
			}
		}
		if time.Now().After(deadline) {
			return r, h, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// measure starts the real edgecore (edged on the test containerd, no cloud) with pods seeded in its
// store, waits until they all run in containerd, and returns edgecore's own RSS once it settles.
func measure(b *testing.B, ep string, cri *crienv.Client, pods int) (rss, hwm, anon int64, cpu, wake float64) {
	b.Helper()
	bin := edgecoreBinary(b)
	dir := b.TempDir()
	ns := fmt.Sprintf("edgedbench-rss-%d", time.Now().UnixNano()%1e9)
	dbPath := filepath.Join(dir, "edgecore.db")
	seedPods(b, dbPath, ns, pods)
	admin := freeAddr(b)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"KEDGE_NODE__NAME="+benchNode,
		"KEDGE_STORE__PATH="+dbPath,
		"KEDGE_ADMIN__ADDRESS="+admin,
		"KEDGE_ADMIN__SOCKET="+filepath.Join(dir, "admin.sock"),
		"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:0",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
		"KEDGE_MODULES__EDGEHUB__ENABLE=false",
		"KEDGE_MODULES__NORUNTIME__ENABLE=false",
		"KEDGE_MODULES__EDGED__ENABLE=true",
		"KEDGE_MODULES__EDGED__CRIENDPOINT="+ep,
		"KEDGE_MODULES__EDGED__ROOTDIR="+filepath.Join(dir, "edged"),
		"KEDGE_MODULES__EDGED__PODSANDBOXIMAGE="+crienv.Pause,
		"KEDGE_MODULES__NODESTATUS__CRIENDPOINT="+ep,
		"KEDGE_MODULES__NODESTATUS__STORAGEPATH="+dir,
	)
	var stderr strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(p) })
	logs := func() string { mu.Lock(); defer mu.Unlock(); return stderr.String() }
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		// edgecore leaves its pods running on exit (a restart adopts them): remove them here.
		if err := cri.RemoveSandboxes(context.Background(), map[string]string{labelManaged: "edged", labelNamespace: ns}); err != nil {
			b.Errorf("cleanup of %s: %v", ns, err)
		}
		if b.Failed() {
			b.Logf("edgecore stderr:\n%s", logs())
		}
	}()

	wait := func(what string, limit time.Duration, ok func() bool) {
		deadline := time.Now().Add(limit)
		for !ok() {
			select {
			case <-exited:
				b.Fatalf("edgecore exited while waiting for %s: %v\n%s", what, cmd.ProcessState, logs())
			default:
			}
			if time.Now().After(deadline) {
				b.Fatalf("not within %s: %s", limit, what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	wait("edgecore ready", time.Minute, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	wait(fmt.Sprintf("%d pods running in containerd", pods), 3*time.Minute, func() bool {
		running, err := runningInCRI(cri, ns)
		return err == nil && len(running) == pods
	})
	// EDGEDBENCH_HOLD (e.g. 45s) reads later: once startup's garbage is collected and the pod workers
	// have run a while, the steady state of a long-running edge rather than the first quiet moment.
	if v := os.Getenv("EDGEDBENCH_HOLD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("EDGEDBENCH_HOLD %q: %v", v, err)
		}
		time.Sleep(d)
	}
	rss, hwm, err := settle(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	anon = anonRSS(cmd.Process.Pid)
	window := 10 * time.Second
	if v := os.Getenv("EDGEDBENCH_IDLE"); v != "" {
		if window, err = time.ParseDuration(v); err != nil || window <= 0 {
			b.Fatalf("EDGEDBENCH_IDLE %q: want a positive duration", v)
		}
	}
	cpu, wake = idleCost(cmd.Process.Pid, window)
	return rss, hwm, anon, cpu, wake
}

// threadTotals sums over the process's threads the CPU time (schedstat, ns on a CPU: finer than the
// 10 ms ticks of /proc/PID/stat) and the voluntary context switches (a thread went to sleep: each is
// a wake-up later).
func threadTotals(pid int) (cpuNs, switches int64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		if b, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				cpuNs += n
			}
		}
		if b, err := os.ReadFile(filepath.Join(t, "status")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					switches += n
				}
			}
		}
	}
	return cpuNs, switches
}

// idleCost is the process's CPU in ms per second and its wake-ups per second over window.
func idleCost(pid int, window time.Duration) (cpuMsPerS, wakeupsPerS float64) {
	c0, w0 := threadTotals(pid)
	start := time.Now()
	time.Sleep(window)
	c1, w1 := threadTotals(pid)
	secs := time.Since(start).Seconds()
	return float64(c1-c0) / 1e6 / secs, float64(w1-w0) / secs
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// BenchmarkEdgecoreRSS is the resident memory of the real edgecore process (edged, metamanager,
// nodestatus and the other default modules; no cloud link) with 0 and with 20 pods running in
// containerd. containerd and its shims are other processes and are not counted.
func BenchmarkEdgecoreRSS(b *testing.B) {
	if testing.Short() {
		b.Skip("needs containerd (not with -short)")
	}
	ep, cri := crienv.Start(b)
	for _, pods := range []int{0, podsPerRound} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			var sumRSS, sumHWM, sumAnon int64
			var sumCPU, sumWake float64
			n := 0
			for b.Loop() {
				rss, hwm, anon, cpu, wake := measure(b, ep, cri, pods)
				sumRSS, sumHWM, sumAnon, n = sumRSS+rss, sumHWM+hwm, sumAnon+anon, n+1
				sumCPU, sumWake = sumCPU+cpu, sumWake+wake
			}
			b.ReportMetric(sumCPU/float64(n), "idle-cpu-ms/s")
			b.ReportMetric(sumWake/float64(n), "wakeups/s")
			b.ReportMetric(float64(sumRSS)/float64(n)/1024, "rss-MiB")
			b.ReportMetric(float64(sumHWM)/float64(n)/1024, "peak-rss-MiB")
			b.ReportMetric(float64(sumAnon)/float64(n)/1024, "anon-MiB")
			b.ReportMetric(0, "ns/op")
		})
	}
}
