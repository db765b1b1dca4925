// Package e2e runs the real binaries: built once per test run, started as processes, talked to over
// their admin HTTP port and stopped with signals.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/test/slow"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "kedge-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// -race: the daemons' own goroutines are checked while the tests drive them.
		cmd := exec.Command("go", "build", "-race", "-o", dir+"/", "github.com/kedge-io/kedge/cmd/cloudcore", "github.com/kedge-io/kedge/cmd/edgecore")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		binDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

func needBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
}

// daemon is one running binary.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	admin  string
	socket string
	stderr *syncBuffer
	exited chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The port is free now, not reserved: the kernel may hand it out again before the daemon it is
		// meant for binds it (two ports of one cloudcore came out equal once: hub and metricsAPI). No
		// port is given twice in this process.
		if _, given := givenPorts.LoadOrStore(port, true); !given {
			return port
		}
	}
}

var givenPorts sync.Map // ports freePort handed out

// start runs binary with isolated state (its store in a temp dir, its admin server on a free port)
// and otherwise the given args and environment.
func start(t *testing.T, binary string, env []string, args ...string) *daemon {
	t.Helper()
	return startFile(t, filepath.Join(binDir, binary), binary, env, args...)
}

// startFile is start with the executable at path (e.g. a release build) run as binary.
func startFile(t *testing.T, path, binary string, env []string, args ...string) *daemon {
	t.Helper()
	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(path, args...)
	state := t.TempDir()
	cmd.Env = append(daemonEnviron(), "KEDGE_STORE__PATH="+filepath.Join(state, binary+".db"), "KEDGE_ADMIN__ADDRESS="+admin,
		"KEDGE_ADMIN__SOCKET="+filepath.Join(state, binary+".sock"))
	if binary == "cloudcore" { // the hub and certificate server on free loopback ports, the CA in the test's folder
		cmd.Env = append(cmd.Env, "KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:0", "KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:0",
			"KEDGE_MODULES__CLOUDHUB__PKIDIR="+filepath.Join(state, "pki"))
	}
	if binary == "edgecore" { // the MetaServer and the MQTT broker on free ports, not the shared defaults
		cmd.Env = append(cmd.Env, "KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:0",
			"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:0", "KEDGE_MODULES__DMI__SOCKET="+filepath.Join(state, "dmi.sock"))
	}
	cmd.Env = append(cmd.Env, env...)
	d := &daemon{t: t, cmd: cmd, admin: admin, socket: filepath.Join(state, binary+".sock"), stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", binary, d.stderr.String())
		}
	})
	return d
}

// waitReady polls /readyz until it answers 200.
func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			d.t.Fatalf("%s exited before it was ready: %v\n%s", d.cmd.Path, d.cmd.ProcessState, d.stderr)
		default:
		}
		if resp, err := http.Get("http://" + d.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("%s not ready within 60s", d.cmd.Path)
}

// metric returns the sum of the samples of a metric whose line contains all of match.
func (d *daemon) metric(name string, match ...string) float64 {
	d.t.Helper()
	resp, err := http.Get("http://" + d.admin + "/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || !(len(line) > len(name) && (line[len(name)] == '{' || line[len(name)] == ' ')) {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if ok {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// stop sends sig and returns the exit code and how long the exit took (bounded by limit).
func (d *daemon) stop(sig syscall.Signal, limit time.Duration) (int, time.Duration) {
	d.t.Helper()
	begin := time.Now()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(limit):
		d.t.Fatalf("%s did not exit within %s of %s\n%s", d.cmd.Path, limit, sig, d.stderr)
	}
	return d.cmd.ProcessState.ExitCode(), time.Since(begin)
}

// daemonEnviron is the test's environment without the variables meant for the tests themselves:
// Kedge's binaries read every KEDGE_* variable as config and refuse unknown keys.
func daemonEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEDGE_KUBEEDGE_DIR=") {
			env = append(env, kv)
		}
	}
	return env
}

// run runs a binary to completion and returns exit code, stdout and stderr.
func run(t *testing.T, binary string, env []string, args ...string) (int, string, string) {
	t.Helper()
	return runWithin(t, time.Minute, binary, env, args...)
}

// runWithin is run with the command killed after limit (scaled by KEDGE_TEST_TIMEOUT_SCALE), for
// commands that may rightly take long on a busy machine (a swap to a WASM module compiling cold).
func runWithin(t *testing.T, limit time.Duration, binary string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), slow.Scale(limit))
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, binary), args...)
	cmd.Env = append(daemonEnviron(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// syncBuffer collects a child's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
