package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// footprintPods is how many pods each edge runs while it is measured (issue 22's "full with 20 pods").
const footprintPods = 20

// procSample is one look at a process in /proc: memory in KiB, CPU in ns (its threads' schedstat, finer
// than /proc/PID/stat's 10 ms ticks), context switches
// summed over its threads (a voluntary switch is a thread going to sleep: one wake-up later).
type procSample struct {
	rss, anon, file   int64
	cpuNS             int64
	voluntary, forced int64
	threads           int
	at                time.Time
}

func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			s.rss = v
		case "RssAnon:":
			s.anon = v
		case "RssFile:":
			s.file = v
		}
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return s, err
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // a thread that just ended
		}
		if ss, err := os.ReadFile(filepath.Join(filepath.Dir(task), "schedstat")); err == nil {
			if f := strings.Fields(string(ss)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				s.cpuNS += ns
			}
		}
		s.threads++
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "voluntary_ctxt_switches:":
					s.voluntary += v
				case "nonvoluntary_ctxt_switches:":
					s.forced += v
				}
			}
		}
	}
	return s, nil
}

// settleRSS samples VmRSS every 250 ms until 8 samples in a row stay within 2% of each other (or
// limit passes) and returns the last sample.
func settleRSS(t *testing.T, pid int, limit time.Duration) procSample {
	t.Helper()
	var window []int64
	deadline := time.Now().Add(limit)
	for {
		s, err := readProc(pid)
		if err != nil {
			t.Fatal(err)
		}
		window = append(window, s.rss)
		if len(window) > 8 {
			window = window[1:]
		}
		if len(window) == 8 {
			lo, hi := window[0], window[0]
			for _, v := range window {
				lo, hi = min(lo, v), max(hi, v)
			}
			if float64(hi-lo) <= 0.02*float64(hi) || time.Now().After(deadline) {
				return s
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// footprint is what the side-by-side measurement records per edgecore.
type footprint struct {
	Who     string `json:"who"`
	Pods    int    `json:"pods"`
	RSSKiB  int64  `json:"rssKiB"`
	AnonKiB int64  `json:"anonKiB"`
	FileKiB int64  `json:"fileKiB"`
	Threads int    `json:"threads"`
	// WorkingSetKiB is VmRSS once the kernel was told to reclaim the executable's pages
	// (process_madvise MADV_PAGEOUT of its read-only file mappings) and the process idled again.
	WorkingSetKiB int64   `json:"workingSetKiB"`
	CPUmsPerS     float64 `json:"cpuMsPerS"`
	WakeupsPerS   float64 `json:"wakeupsPerS"`
}

// TestFootprintOfKedgeAndUpstreamEdgecoreWith20PodsEachOnOneControlPlane is a measurement, not a
// check of behaviour: KubeEdge v1.23.1's edgecore and a Kedge edgecore (the executable in
// FOOTPRINT_EDGECORE, e.g. the full class's release build) join one Kedge cloudcore on one API
// server, each runs 20 pods (upstream on a containerd of its own, Kedge on the shared one), and once
// all 40 run both processes' resident memory (settled), idle CPU and wake-ups over FOOTPRINT_IDLE
// (default 10s) are taken at the same time. Results go to the log and, as JSON lines, to
// FOOTPRINT_OUT. hack/classes.sh runs it (make classes); skipped unless FOOTPRINT_EDGECORE is set.
func TestFootprintOfKedgeAndUpstreamEdgecoreWith20PodsEachOnOneControlPlane(t *testing.T) {
	needBinaries(t)
	kedgeBin := os.Getenv("FOOTPRINT_EDGECORE")
	if kedgeBin == "" {
		t.Skip("a measurement: set FOOTPRINT_EDGECORE to the edgecore executable to measure (hack/classes.sh does)")
	}
	idle := 10 * time.Second
	if v := os.Getenv("FOOTPRINT_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("FOOTPRINT_IDLE %q: %v", v, err)
		}
		idle = d
	}
	keDir := kubeedgeDir(t, "edgecore")
	kedgeCRI, kedgeCRIClient := crienv.Start(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if err := env.InstallCRDs(); err != nil { // devicecontroller answers the upstream edge's devicetwin
		t.Fatal(err)
	}
	kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(kcfg)

	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	hubPort, certPort := freePort(t), freePort(t)
	cloud := start(t, "cloudcore", []string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(hubPort),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
		"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
	})
	cloud.waitReady()
	token := func() string {
		t.Helper()
		code, tok, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
		if code != 0 {
			t.Fatalf("token create: %d %s", code, stderr)
		}
		return strings.TrimSpace(tok)
	}
	ns := "footprint"
	upNode := fmt.Sprintf("fp-ke-%d", os.Getpid()%100000)
	kedgeNode := fmt.Sprintf("fp-kedge-%d", os.Getpid()%100000)
	// (upstreamEdgecoreConfig lowers the kubelet's disk eviction thresholds, as for every upstream test.)
	up := newUpstreamEdge(t, keDir, upNode, token(), hubPort, certPort, "kefp0", "10.97.0.0/16", ns)

	kedgeDir := filepath.Join(dir, "kedge")
	kedgeCfg := filepath.Join(dir, "kedge-edgecore.yaml")
	if code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token(),
		"--node-name", kedgeNode, "--data-dir", kedgeDir, "--config-out", kedgeCfg,
		"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort)); code != 0 {
		t.Fatalf("Kedge edgecore join: %d %s %s", code, out, stderr)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := kedgeCRIClient.RemoveSandboxes(ctx, map[string]string{edgedManaged: "edged", edgedPodNamespace: ns}); err != nil {
			t.Errorf("removing the test's sandboxes: %v", err)
		}
	})
	// Shipped defaults but for what a second edge on this machine needs (ports, folders, its runtime).
	kedge := startFile(t, kedgeBin, "edgecore", []string{
		"KEDGE_MODULES__NORUNTIME__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
		"KEDGE_MODULES__EDGED__ENABLE=true",
		"KEDGE_MODULES__EDGED__CRIENDPOINT=" + kedgeCRI,
		"KEDGE_MODULES__EDGED__ROOTDIR=" + filepath.Join(dir, "edged"),
		"KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
		"KEDGE_MODULES__NODESTATUS__CRIENDPOINT=" + kedgeCRI,
	}, "--config", kedgeCfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kedge edgecore log (last 8 KiB):\n%s", tail(kedge.stderr.String(), 8<<10))
		}
	})
	ctx := context.Background()
	wait := func(what string, limit time.Duration, ok func() (bool, string)) {
		t.Helper()
		waitFor(t, what, limit, func() (bool, string) {
			if up.exited() {
				t.Fatalf("upstream edgecore exited while waiting for %s", what)
			}
			select {
			case <-kedge.exited:
				t.Fatalf("Kedge edgecore exited while waiting for %s", what)
			default:
			}
			return ok()
		})
	}
	for _, node := range []string{upNode, kedgeNode} {
		wait(node+" Ready", 3*time.Minute, func() (bool, string) {
			n, err := kc.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status == corev1.ConditionTrue, fmt.Sprintf("Ready=%s %s", c.Status, c.Message)
				}
			}
			return false, "no Ready condition"
		})
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	grace, no := int64(1), false
	for i := range footprintPods {
		for _, node := range []string{upNode, kedgeNode} {
			_, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%02d", node, i)}, Spec: corev1.PodSpec{
				NodeName: node, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "c", Image: crienv.Busybox, ImagePullPolicy: corev1.PullNever,
					Command: []string{"sh", "-c", "exec sleep 3600"}}},
			}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	wait(fmt.Sprintf("%d pods Running on each edge", footprintPods), 6*time.Minute, func() (bool, string) {
		list, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		running := map[string]int{}
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				running[p.Spec.NodeName]++
			}
		}
		return running[upNode] == footprintPods && running[kedgeNode] == footprintPods, fmt.Sprint(running)
	})

	procs := []struct {
		who string
		pid int
	}{{"upstream KubeEdge v1.23.1 edgecore", up.cmd.Process.Pid}, {"Kedge edgecore " + filepath.Base(kedgeBin), kedge.cmd.Process.Pid}}
	var results []footprint
	for _, p := range procs {
		s := settleRSS(t, p.pid, time.Minute)
		results = append(results, footprint{Who: p.who, Pods: footprintPods, RSSKiB: s.rss, AnonKiB: s.anon, FileKiB: s.file, Threads: s.threads})
	}
	// Idle CPU and wake-ups of both over the same window.
	var before [2]procSample
	for i, p := range procs {
		if before[i], err = readProc(p.pid); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(idle)
	for i, p := range procs {
		after, err := readProc(p.pid)
		if err != nil {
			t.Fatal(err)
		}
		secs := after.at.Sub(before[i].at).Seconds()
		results[i].CPUmsPerS = float64(after.cpuNS-before[i].cpuNS) / 1e6 / secs
		results[i].WakeupsPerS = float64(after.voluntary-before[i].voluntary) / secs
	}
	// What each process needs resident: on this machine (read_ahead_kb 8192, large page-cache folios)
	// the whole executable is mapped once started; reclaim its file pages and let both idle again.
	for _, p := range procs {
		if err := pageOutExecutable(p.pid); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(idle)
	for i, p := range procs {
		s, err := readProc(p.pid)
		if err != nil {
			t.Fatal(err)
		}
		results[i].WorkingSetKiB = s.rss
	}
	ratio := float64(results[1].RSSKiB) / float64(results[0].RSSKiB)
	var out strings.Builder
	for _, r := range results {
		t.Logf("%s, %d pods: RSS %.1f MiB (anonymous %.1f, file %.1f), after reclaim %.1f MiB, %d threads, idle CPU %.2f ms/s, %.0f wake-ups/s",
			r.Who, r.Pods, float64(r.RSSKiB)/1024, float64(r.AnonKiB)/1024, float64(r.FileKiB)/1024, float64(r.WorkingSetKiB)/1024, r.Threads, r.CPUmsPerS, r.WakeupsPerS)
		b, _ := json.Marshal(r)
		out.Write(append(b, '\n'))
	}
	t.Logf("Kedge / upstream RSS: %.2f× (after reclaim %.2f×)", ratio, float64(results[1].WorkingSetKiB)/float64(results[0].WorkingSetKiB))
	if path := os.Getenv("FOOTPRINT_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// pageOutExecutable asks the kernel to reclaim the pages of pid's executable (its read-only file
// mappings: code and read-only data) as it would under memory pressure; what the process touches
// afterwards faults back in.
func pageOutExecutable(pid int) error {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return err
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe || strings.Contains(f[1], "w") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("/proc/%d/maps: bad range %q", pid, f[0])
		}
		iov := struct{ base, len uintptr }{uintptr(a), uintptr(b - a)} // struct iovec; an address in the other process
		if _, _, errno := unix.Syscall6(unix.SYS_PROCESS_MADVISE, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, unix.MADV_PAGEOUT, 0, 0); errno != 0 {
			return fmt.Errorf("process_madvise %d %s: %w", pid, f[0], errno)
		}
	}
	return nil
}
