package mbserver

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bus is a simulated RS-485 line made of pseudo-terminals: the master (the code under test) opens
// MasterPort; its requests reach the slaves they address, every byte a slave sends reaches the
// master, as on a multi-drop bus. Each slave is a libmodbus RTU server on its own socat pty pair. Between
// them a relay can damage frames (FlipResponses) to test CRC handling.
type Bus struct {
	t          testing.TB
	dir        string
	MasterPort string
	master     *os.File // the relay's end of the master's pty pair
	mu         sync.Mutex
	slaves     map[int]*rtuSlave
	flip       atomic.Int64 // responses still to damage
	flipped    atomic.Int64
	baud       int
	parity     string
}

type rtuSlave struct {
	end *os.File    // the relay's end of this slave's pty pair
	in  chan []byte // bytes from the master, written by the slave's own goroutine
	cmd *exec.Cmd
}

// socatPair makes a pty pair with socat and returns the two device paths (links in dir).
func socatPair(t testing.TB, dir, a, b string) {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		out, ierr := exec.Command("apt-get", "install", "-y", "socat").CombinedOutput()
		if ierr != nil {
			t.Fatalf("socat is missing and `apt-get install -y socat` failed: %v\n%s", ierr, out)
		}
	}
	pa, pb := filepath.Join(dir, a), filepath.Join(dir, b)
	cmd := exec.Command("socat", "pty,raw,echo=0,link="+pa, "pty,raw,echo=0,link="+pb)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting socat: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for end := time.Now().Add(30 * time.Second); ; {
		_, ea := os.Stat(pa)
		_, eb := os.Stat(pb)
		if ea == nil && eb == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("socat did not create the pty pair %s / %s within 30s", pa, pb)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openRaw(t testing.TB, path string) *os.File {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag, tio.Oflag, tio.Lflag = 0, 0, 0
	tio.Cflag |= unix.CREAD | unix.CLOCAL
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), path)
}

// StartBus builds the RTU server and starts a bus with a libmodbus slave for each id.
func StartBus(t testing.TB, baud int, parity string, slaves ...int) *Bus {
	t.Helper()
	if err := ensureLibmodbus(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := &Bus{t: t, dir: dir, slaves: map[int]*rtuSlave{}, baud: baud, parity: parity}
	socatPair(t, dir, "master", "master-bus")
	b.MasterPort = filepath.Join(dir, "master")
	b.master = openRaw(t, filepath.Join(dir, "master-bus"))
	t.Cleanup(func() { b.master.Close() })
	bin := BuildRTU(t, dir)
	for _, id := range slaves {
		b.addSlave(bin, id)
	}
	go b.fromMaster()
	return b
}

// BuildRTU compiles testdata/rtu_server.c into dir.
func BuildRTU(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "rtuserver")
	src := filepath.Join(filepath.Dir(Source()), "rtu_server.c")
	out, err := exec.Command("gcc", "-O2", "-Wall", "-I/usr/include/modbus", "-o", bin, src, "-lmodbus").CombinedOutput()
	if err != nil {
		t.Fatalf("compiling %s with gcc -lmodbus: %v\n%s", src, err, out)
	}
	return bin
}

// StartRTU starts one libmodbus RTU slave on port (one end of a pty pair the caller made).
func StartRTU(t testing.TB, bin, port string, baud int, parity string, id int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, port, fmt.Sprint(baud), parity, fmt.Sprint(id))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the libmodbus RTU server: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		if strings.TrimSpace(l) != fmt.Sprintf("READY %d", id) {
			t.Fatalf("libmodbus RTU server %d did not start (said %q)", id, l)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("libmodbus RTU server %d did not start within 30s", id)
	}
	return cmd
}

// PairPorts makes a socat pty pair in a fresh directory and returns both ends.
func PairPorts(t testing.TB) (a, b string) {
	t.Helper()
	dir := t.TempDir()
	socatPair(t, dir, "a", "b")
	return filepath.Join(dir, "a"), filepath.Join(dir, "b")
}

func (b *Bus) addSlave(bin string, id int) {
	b.t.Helper()
	a, z := fmt.Sprintf("slave%d", id), fmt.Sprintf("slave%d-bus", id)
	socatPair(b.t, b.dir, a, z)
	s := &rtuSlave{end: openRaw(b.t, filepath.Join(b.dir, z)), in: make(chan []byte, 256)}
	b.t.Cleanup(func() { s.end.Close() })
	go func() { // a stopped slave's full pty must not hold up the bus: its bytes are dropped instead
		for p := range s.in {
			if _, err := s.end.Write(p); err != nil {
				return
			}
		}
	}()
	s.cmd = StartRTU(b.t, bin, filepath.Join(b.dir, a), b.baud, b.parity, id)
	b.mu.Lock()
	b.slaves[id] = s
	b.mu.Unlock()
	go b.fromSlave(s)
}

// fromMaster routes each request frame the master sends to the slave it addresses (every slave
// for the broadcast unit 0). A libmodbus slave that sees a request for another unit expects to hear
// that unit's answer next and ignores whatever comes; on a loaded machine that swallows the next
// real request, so the relay spares the slaves foreign frames. What the master sees is the same.
func (b *Bus) fromMaster() {
	buf := make([]byte, 512)
	var frame []byte
	for {
		n, err := b.master.Read(buf)
		if err != nil {
			return
		}
		frame = append(frame, buf[:n]...)
		for {
			size := requestLen(frame)
			if size == 0 || len(frame) < size {
				break
			}
			b.route(frame[:size])
			frame = frame[size:]
		}
		if requestLen(frame) < 0 { // not a request we know: drop it, the master will time out
			frame = nil
		}
	}
}

// requestLen is the length of the request frame at the start of f: 0 when more bytes are needed,
// -1 when f does not start with a request this relay knows.
func requestLen(f []byte) int {
	if len(f) < 2 {
		return 0
	}
	switch f[1] {
	case 1, 2, 3, 4, 5, 6:
		return 8
	case 15, 16:
		if len(f) < 7 {
			return 0
		}
		return 7 + int(f[6]) + 2
	}
	return -1
}

func (b *Bus) route(frame []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, s := range b.slaves {
		if frame[0] != 0 && int(frame[0]) != id {
			continue
		}
		select {
		case s.in <- append([]byte(nil), frame...):
		default: // a stopped slave's pty is full: its bytes are lost, as on a real line
		}
	}
}

// fromSlave copies a slave's bytes to the master, damaging one byte of a chunk while FlipResponses
// asks for it.
func (b *Bus) fromSlave(s *rtuSlave) {
	buf := make([]byte, 512)
	for {
		n, err := s.end.Read(buf)
		if err != nil {
			return
		}
		if b.flip.Load() > 0 && b.flip.Add(-1) >= 0 {
			buf[n-1] ^= 0x5a // the CRC's high byte, or the last data byte of a split frame
			b.flipped.Add(1)
		}
		b.master.Write(buf[:n])
	}
}

// FlipResponses damages the next n chunks slaves send to the master.
func (b *Bus) FlipResponses(n int) { b.flip.Store(int64(n)) }

// Flipped is how many chunks were damaged.
func (b *Bus) Flipped() int64 { return b.flipped.Load() }

// Silence stops slave id answering (SIGSTOP), as a slave that lost power or its address.
func (b *Bus) Silence(id int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.slaves[id]; s != nil {
		s.cmd.Process.Signal(unix.SIGSTOP)
	}
}
