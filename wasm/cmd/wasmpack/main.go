// Command wasmpack embeds a manifest into a Kedge WASM module, so the module's sha256 pins its code
// and its capabilities together:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o guest.wasm ./myguest
//	wasmpack -manifest myguest/manifest.yaml -in guest.wasm -out myguest.wasm
//
// It validates the manifest, replaces any manifest already in the module, writes the result and
// prints its sha256 for the `sha256:` line of the module's config block. -check prints the manifest
// a packed module carries. -cache DIR also compiles the packed module (or with -check, the checked
// one) into the compilation cache edgecore reads (its wasm cache directory), so the device does not
// compile it at first start. It compiles what the runtime compiles: by default the code instrumented
// with Kedge's loop checks (wasm/instrument; wazero's termination checks for a module the
// instrumenter refuses); add -interruptible=false for a module its config block runs with
// `interruptible: false` (no checks, a separate cache entry).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kedge-io/kedge/wasm/compile"
	"github.com/kedge-io/kedge/wasm/manifest"
)

func main() {
	manifestPath := flag.String("manifest", "", "manifest file (YAML or JSON)")
	in := flag.String("in", "", "guest module built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared")
	out := flag.String("out", "", "packed module to write")
	check := flag.String("check", "", "print the manifest of this packed module and its sha256, and exit")
	cacheDir := flag.String("cache", "", "also compile the module into this compilation cache directory")
	interruptible := flag.Bool("interruptible", true, "with -cache: compile as the config block's interruptible setting will run it")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: wasmpack -manifest m.yaml -in guest.wasm -out module.wasm [-cache dir]\n       wasmpack -check module.wasm [-cache dir]")
		flag.PrintDefaults()
	}
	flag.Parse()
	var err error
	switch {
	case *check != "":
		err = show(*check, *cacheDir, *interruptible)
	case *manifestPath == "" || *in == "" || *out == "" || flag.NArg() > 0:
		flag.Usage()
		os.Exit(2)
	default:
		err = pack(*manifestPath, *in, *out, *cacheDir, *interruptible)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasmpack:", err)
		os.Exit(1)
	}
}

func pack(manifestPath, in, out, cacheDir string, interruptible bool) error {
	src, err := os.ReadFile(manifestPath)
	if err != nil {
		return err
	}
	m, err := manifest.ParseYAML(src)
	if err != nil {
		return fmt.Errorf("%s: %w", manifestPath, err)
	}
	wasm, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	packed, err := manifest.Embed(wasm, m)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	// Write beside the target and rename, so a running edgecore never reads a half-written module.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".wasmpack-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(packed); err != nil {
		tmp.Close()
		return err
	}
	if err := errors.Join(tmp.Chmod(0o644), tmp.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	fmt.Printf("%s  sha256: %s\n", out, sum(packed))
	return precompile(packed, cacheDir, interruptible)
}

func precompile(wasm []byte, cacheDir string, interruptible bool) error {
	if cacheDir == "" {
		return nil
	}
	if err := compile.AheadFor(context.Background(), cacheDir, wasm, interruptible); err != nil {
		return fmt.Errorf("compile into %s: %w", cacheDir, err)
	}
	return nil
}

func show(path, cacheDir string, interruptible bool) error {
	wasm, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	m, err := manifest.Read(wasm)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Printf("%s\nsha256: %s\n", m.Marshal(), sum(wasm))
	return precompile(wasm, cacheDir, interruptible)
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
