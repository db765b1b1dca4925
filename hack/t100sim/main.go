// Command t100sim is the demo's Modbus device: the sampling Acme T-100 thermometer of test/t100sim in
// front of a real Modbus TCP server, and the check that every reading it served reached the twin.
//
//	t100sim serve -modbus 127.0.0.1:1502 -listen 127.0.0.1:0 -served served.txt
//	    prints "LISTENING <host:port>", then appends each count served to served.txt until SIGTERM
//	t100sim check -served served.txt -documents docs.txt [-since N]
//	    docs.txt: `mosquitto_sub -v -t '$hw/events/device/<id>/twin/update/document'` output; compares
//	    the temperatures devicetwin published with the counts served and prints "readings lost: N"
//	    (exit 1 when a reading was lost, duplicated or reordered)
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/test/t100sim"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: t100sim serve|check [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "check":
		err = check(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "t100sim: unknown command %q (serve, check)\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "t100sim:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	target := fs.String("modbus", "", "the Modbus TCP server holding the registers (host:port)")
	listen := fs.String("listen", "127.0.0.1:0", "where the T-100 listens")
	servedFile := fs.String("served", "", "file the counts served are appended to, one a line")
	_ = fs.Parse(args)
	if *target == "" || *servedFile == "" {
		return fmt.Errorf("serve: -modbus and -served are required")
	}
	f, err := os.OpenFile(*servedFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	var mu sync.Mutex
	var werr error
	d, err := t100sim.Start(*listen, *target, t100sim.Registers, func(n uint32) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintln(f, n); err != nil && werr == nil {
			werr = err
		}
	})
	if err != nil {
		return err
	}
	fmt.Println("LISTENING", d.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if err := d.Close(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return werr
}

// reading is one temperature devicetwin published: the count it decodes to and its unit.
type reading struct {
	count  uint32
	kelvin bool
	value  string
}

func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	servedFile := fs.String("served", "", "the counts the device served (t100sim serve -served)")
	docsFile := fs.String("documents", "", "mosquitto_sub -v output of the device's twin/update/document topic")
	since := fs.Int("since", 0, "only readings from this count on (0: all)")
	_ = fs.Parse(args)
	served, err := readServed(*servedFile)
	if err != nil {
		return err
	}
	got, err := readDocuments(*docsFile)
	if err != nil {
		return err
	}
	for len(got) > 0 && int(got[0].count) < *since {
		got = got[1:]
	}
	for len(served) > 0 && int(served[0]) < *since {
		served = served[1:]
	}
	if len(got) == 0 || len(served) == 0 {
		return fmt.Errorf("no readings to compare: %d served, %d in the twin's documents", len(served), len(got))
	}
	first := -1
	for i, s := range served {
		if s == got[0].count {
			first = i
			break
		}
	}
	if first < 0 {
		return fmt.Errorf("the first reading in the twin, count %d, was never served", got[0].count)
	}
	// From the first reading on, the twin must hold every count served, once, in order; reads served
	// after the last document captured are still on their way and not counted.
	lost, bad := 0, 0
	i := first
	for _, rd := range got {
		for i < len(served) && served[i] < rd.count {
			lost++
			i++
		}
		if i >= len(served) || served[i] != rd.count {
			bad++ // duplicated or reordered: a count already passed, or one never served
			continue
		}
		i++
	}
	var lastC, firstK *reading
	for k := range got {
		if !got[k].kelvin {
			lastC = &got[k]
		} else if firstK == nil {
			firstK = &got[k]
		}
	}
	fmt.Printf("%d reads served, %d readings in the twin (counts %d..%d)\n", len(served), len(got), got[0].count, got[len(got)-1].count)
	if lastC != nil {
		fmt.Printf("last reading decoded in Celsius: count %d -> temperature %s\n", lastC.count, lastC.value)
	}
	if firstK != nil {
		fmt.Printf("first reading decoded in Kelvin: count %d -> temperature %s\n", firstK.count, firstK.value)
	}
	fmt.Printf("readings lost: %d\n", lost)
	if bad > 0 {
		fmt.Printf("readings duplicated or out of order: %d\n", bad)
	}
	if lost > 0 || bad > 0 {
		return fmt.Errorf("%d readings lost, %d duplicated or out of order", lost, bad)
	}
	return nil
}

func readServed(path string) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []uint32
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %q is not a count", path, ln, s)
		}
		out = append(out, uint32(n))
	}
	return out, sc.Err()
}

// readDocuments decodes the temperatures in `mosquitto_sub -v` lines ("<topic> <payload>"). Counts stay
// far below 2731 (0.1 degrees each), so a value from 273.15 up is Kelvin.
func readDocuments(path string) ([]reading, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []reading
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		_, payload, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"<topic> <payload>\" (mosquitto_sub -v), got %q", path, ln, line)
		}
		var doc struct {
			Twin map[string]struct {
				Current *struct {
					Actual *struct {
						Value *string `json:"value"`
					} `json:"actual"`
				} `json:"current"`
			} `json:"twin"`
		}
		if err := json.Unmarshal([]byte(payload), &doc); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, ln, err)
		}
		tw, ok := doc.Twin["temperature"]
		if !ok || tw.Current == nil || tw.Current.Actual == nil || tw.Current.Actual.Value == nil {
			continue
		}
		v, err := strconv.ParseFloat(*tw.Current.Actual.Value, 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: temperature %q is not a number", path, ln, *tw.Current.Actual.Value)
		}
		rd := reading{value: *tw.Current.Actual.Value}
		if v >= layout.Kelvin-1e-9 {
			rd.kelvin, v = true, v-layout.Kelvin
		}
		rd.count = uint32(math.Round(v * 10))
		out = append(out, rd)
	}
	return out, sc.Err()
}
