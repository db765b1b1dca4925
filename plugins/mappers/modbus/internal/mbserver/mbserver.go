// Package mbserver runs the libmodbus test server (plugins/mappers/modbus/testdata/server.c) for
// tests: it compiles the C source with gcc against Debian's libmodbus (installing libmodbus-dev with
// apt-get when it is missing) and starts it on a 127.0.0.1 port.
package mbserver

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var installOnce sync.Once
var installErr error

// ensureLibmodbus installs gcc and libmodbus-dev when the header or the compiler is missing.
func ensureLibmodbus() error {
	installOnce.Do(func() {
		_, gccErr := exec.LookPath("gcc")
		if _, err := os.Stat("/usr/include/modbus/modbus.h"); err == nil && gccErr == nil {
			return
		}
		install := func() ([]byte, error) {
			return exec.Command("apt-get", "install", "-y", "gcc", "libmodbus-dev").CombinedOutput()
		}
		out, err := install()
		if err != nil {
			exec.Command("apt-get", "update").Run()
			out, err = install()
		}
		if err != nil {
			installErr = fmt.Errorf("libmodbus-dev is missing and `apt-get install -y gcc libmodbus-dev` failed: %v\n%s", err, out)
		}
	})
	return installErr
}

// Source is the path of the C server source.
func Source() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "server.c")
}

// Build compiles the server into dir and returns the binary's path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	if err := ensureLibmodbus(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mbserver")
	out, err := exec.Command("gcc", "-O2", "-Wall", "-I/usr/include/modbus", "-o", bin, Source(), "-lmodbus").CombinedOutput()
	if err != nil {
		t.Fatalf("compiling %s with gcc -lmodbus: %v\n%s", Source(), err, out)
	}
	return bin
}

// Server is a running libmodbus server.
type Server struct {
	t    testing.TB
	bin  string
	Port int
	cmd  *exec.Cmd
}

// Start compiles and starts a server on a free port; it is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Build(t, t.TempDir())}
	s.start(0)
	t.Cleanup(s.Stop)
	return s
}

// Addr is "127.0.0.1:<port>".
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

func (s *Server) start(port int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, fmt.Sprint(port))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting the libmodbus server: %v", err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "LISTENING %d", &s.Port); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			s.t.Fatalf("libmodbus server did not report its port (got %q)", l)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		s.t.Fatal("libmodbus server did not start within 10s")
	}
	s.cmd = cmd
}

// Stop kills the server (its state is lost).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Restart kills the server and starts a fresh one on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	port := s.Port
	s.Stop()
	s.start(port)
}
