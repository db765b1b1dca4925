// Package uaserver runs the node-opcua test server (plugins/mappers/opcua/testdata/server.js) for
// tests (the mapper's, and test/e2e's through the real binaries): it installs node-opcua with npm once into a cache folder (KEDGE_NPM_DIR, default
// _bin/npm under the repository; a lock keeps parallel test packages from installing twice) and
// starts the server on a free 127.0.0.1 port.
package uaserver

import (
	"bufio"
	"fmt"
	"net"
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
)

// Package is the node-opcua release the tests run against.
const Package = "node-opcua@2.186"

func here() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Script is the server's source.
func Script() string { return filepath.Join(here(), "..", "testdata", "server.js") }

func npmDir() string {
	if d := os.Getenv("KEDGE_NPM_DIR"); d != "" {
		return d
	}
	return filepath.Join(here(), "..", "..", "..", "..", "_bin", "npm")
}

var installMu sync.Mutex

// Install makes sure node-opcua is installed and returns its node_modules folder.
func Install(t testing.TB) string {
	t.Helper()
	installMu.Lock()
	defer installMu.Unlock()
	dir, err := filepath.Abs(npmDir())
	if err != nil {
		t.Fatal(err)
	}
	mods := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "node-opcua", "package.json")); err == nil {
		return mods
	}
	if _, err := exec.LookPath("npm"); err != nil {
		out, ierr := exec.Command("apt-get", "install", "-y", "nodejs", "npm").CombinedOutput()
		if ierr != nil {
			t.Fatalf("npm is missing and `apt-get install -y nodejs npm` failed: %v\n%s", ierr, out)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mods, "node-opcua", "package.json")); err == nil {
		return mods // another package installed it while we waited
	}
	t.Logf("installing %s with npm into %s (once)", Package, dir)
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", dir, Package)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install %s: %v\n%s", Package, err, out)
	}
	return mods
}

// Server is a running node-opcua server.
type Server struct {
	t     testing.TB
	mods  string
	pki   string
	Port  int
	cmd   *exec.Cmd
	stdin *os.File
	lines chan string
	mu    sync.Mutex
}

// Start installs node-opcua when needed and starts the server; it is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, mods: Install(t), pki: filepath.Join(t.TempDir(), "pki")}
	s.start(freePort(t))
	t.Cleanup(s.Stop)
	return s
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URL is the server's opc.tcp address.
func (s *Server) URL() string { return fmt.Sprintf("opc.tcp://127.0.0.1:%d", s.Port) }

func (s *Server) start(port int) {
	s.t.Helper()
	cmd := exec.Command("node", Script(), strconv.Itoa(port), s.pki)
	cmd.Env = append(os.Environ(), "NODE_PATH="+s.mods)
	cmd.Stderr = nil
	r, w, err := os.Pipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdin = r
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting node %s: %v", Script(), err)
	}
	r.Close()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "LISTENING") || strings.HasPrefix(l, "READS") || strings.HasPrefix(l, "VALUE") {
				lines <- l
			}
		}
		close(lines)
	}()
	// node-opcua takes seconds to load and more to make its certificate; minutes on a busy machine.
	select {
	case l, ok := <-lines:
		if !ok || l != fmt.Sprintf("LISTENING %d", port) {
			cmd.Process.Kill()
			cmd.Wait()
			s.t.Fatalf("node-opcua server did not start (said %q)", l)
		}
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		s.t.Fatal("node-opcua server did not start within 5 min")
	}
	s.Port, s.cmd, s.stdin, s.lines = port, cmd, w, lines
}

func (s *Server) ask(q, prefix string) string {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintln(s.stdin, q); err != nil {
		s.t.Fatalf("asking the OPC-UA server %q: %v", q, err)
	}
	select {
	case l := <-s.lines:
		if !strings.HasPrefix(l, prefix) {
			s.t.Fatalf("asked %q, the server said %q", q, l)
		}
		return strings.TrimSpace(strings.TrimPrefix(l, prefix))
	case <-time.After(time.Minute):
		s.t.Fatalf("the OPC-UA server did not answer %q within a minute", q)
	}
	return ""
}

// Reads is how many Read service requests the server has answered.
func (s *Server) Reads() int {
	n, _ := strconv.Atoi(s.ask("reads", "READS "))
	return n
}

// Value is a variable's current value as the server holds it (JavaScript's rendering).
func (s *Server) Value(name string) string {
	return strings.TrimPrefix(s.ask("value "+name, "VALUE "), name+" ")
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.stdin.Close()
	s.cmd = nil
}

// Restart kills the server and starts a fresh one (same port, same certificate folder).
func (s *Server) Restart() {
	s.t.Helper()
	port := s.Port
	s.Stop()
	s.start(port)
}
