package mbrtu

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Line is a serial line's settings, in KubeEdge's terms.
type Line struct {
	Port     string // device path, e.g. /dev/ttyUSB0 or /dev/ttyS1
	BaudRate int    // 1200 … 230400; default 19200
	DataBits int    // 5 … 8; default 8
	Parity   string // "none", "even" or "odd" (also N/E/O); default "even" as the Modbus specification says
	StopBits int    // 1 or 2; default 1
}

var bauds = map[int]uint32{
	1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600, 19200: unix.B19200,
	38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200, 230400: unix.B230400,
}

// Normalize fills defaults and checks every field, naming the wrong one.
func (l Line) Normalize() (Line, error) {
	if l.Port == "" {
		return l, fmt.Errorf(`serial line: "serialPort" is required (a device path such as /dev/ttyUSB0)`)
	}
	if !strings.HasPrefix(l.Port, "/") {
		return l, fmt.Errorf("serial line: serialPort %q is not an absolute device path such as /dev/ttyUSB0", l.Port)
	}
	if l.BaudRate == 0 {
		l.BaudRate = 19200
	}
	if _, ok := bauds[l.BaudRate]; !ok {
		return l, fmt.Errorf("serial line %s: baudRate %d is not one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400", l.Port, l.BaudRate)
	}
	if l.DataBits == 0 {
		l.DataBits = 8
	}
	if l.DataBits < 5 || l.DataBits > 8 {
		return l, fmt.Errorf("serial line %s: dataBits %d out of range 5..8", l.Port, l.DataBits)
	}
	switch strings.ToLower(l.Parity) {
	case "", "e", "even":
		l.Parity = "even"
	case "o", "odd":
		l.Parity = "odd"
	case "n", "none":
		l.Parity = "none"
	default:
		return l, fmt.Errorf("serial line %s: parity %q is not one of none, even, odd", l.Port, l.Parity)
	}
	if l.StopBits == 0 {
		l.StopBits = 1
	}
	if l.StopBits != 1 && l.StopBits != 2 {
		return l, fmt.Errorf("serial line %s: stopBits %d, want 1 or 2", l.Port, l.StopBits)
	}
	return l, nil
}

// CharTime is the time one character takes on the line: start bit, data bits, parity, stop bits.
func (l Line) CharTime() time.Duration {
	bits := 1 + l.DataBits + l.StopBits
	if l.Parity != "none" {
		bits++
	}
	return time.Duration(bits) * time.Second / time.Duration(l.BaudRate)
}

// Silence is the inter-frame gap t3.5: 3.5 character times, fixed at 1.75 ms above 19200 baud as
// the Modbus serial line specification recommends.
func (l Line) Silence() time.Duration {
	if l.BaudRate > 19200 {
		return 1750 * time.Microsecond
	}
	return l.CharTime() * 7 / 2
}

// open opens the line raw (no echo, no line discipline, no flow control) with its framing, as a
// pollable file so reads honour deadlines.
func (l Line) open() (*os.File, error) {
	fd, err := unix.Open(l.Port, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open serial line %s: %w", l.Port, err)
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("serial line %s is not a terminal device: %w", l.Port, err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY | unix.INPCK
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CREAD | unix.CLOCAL | bauds[l.BaudRate]
	t.Cflag |= map[int]uint32{5: unix.CS5, 6: unix.CS6, 7: unix.CS7, 8: unix.CS8}[l.DataBits]
	switch l.Parity {
	case "even":
		t.Cflag |= unix.PARENB
		t.Iflag |= unix.INPCK
	case "odd":
		t.Cflag |= unix.PARENB | unix.PARODD
		t.Iflag |= unix.INPCK
	}
	if l.StopBits == 2 {
		t.Cflag |= unix.CSTOPB
	}
	t.Ispeed, t.Ospeed = bauds[l.BaudRate], bauds[l.BaudRate]
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("serial line %s: setting %d baud %d%s%d: %w", l.Port, l.BaudRate, l.DataBits, strings.ToUpper(l.Parity[:1]), l.StopBits, err)
	}
	unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIOFLUSH)
	return os.NewFile(uintptr(fd), l.Port), nil
}

// flushInput drops whatever the line has received and not been read (a late answer, noise).
func flushInput(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.IoctlSetInt(int(fd), unix.TCFLSH, unix.TCIFLUSH) })
	}
}
