// Command binsize sums the symbol sizes of a Go binary by package (the ELF symbol table): where a build's
// bytes go. Run it on an unstripped build of the same tags (-s -w drops the symbol table, not code):
//
//	go build -trimpath -tags "$(CLASS_TAGS_gateway)" -o /tmp/edgecore-gateway ./cmd/edgecore
//	go run ./hack/binsize -top 15 /tmp/edgecore-gateway
//
// Only symbols with bytes in the file count (text, rodata, data; not bss); .gopclntab (the runtime's
// function tables, about 60% of .text) is not in symbols and comes on top. Symbols without a Go package (the C code of cgo, SQLite) count as "C"; the type descriptors
// (type:*) count toward their type's package, itabs and other linker tables as "go:".
// -group cuts paths to a module-ish prefix (github.com/owner/repo, golang.org/x/net, k8s.io/api).
package main

import (
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

func main() {
	top := flag.Int("top", 15, "how many packages to print")
	group := flag.Bool("group", false, "sum by module-ish prefix instead of package")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: binsize [-top N] [-group] BINARY")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := elf.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "binsize: %v\n", err)
		os.Exit(1)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		fmt.Fprintf(os.Stderr, "binsize: %s: %v (build it without -s)\n", flag.Arg(0), err)
		os.Exit(1)
	}
	sums := map[string]int64{}
	var total int64
	for _, s := range syms {
		if s.Size == 0 || s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) ||
			f.Sections[s.Section].Type == elf.SHT_NOBITS || elf.ST_TYPE(s.Info) == elf.STT_SECTION {
			continue // undefined, bss (no bytes in the file), or a section symbol
		}
		p := Package(s.Name)
		if *group {
			p = Group(p)
		}
		sums[p] += int64(s.Size)
		total += int64(s.Size)
	}
	fmt.Printf("sections:")
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Size >= 64<<10 && s.Flags&elf.SHF_ALLOC != 0 {
			fmt.Printf(" %s %d KiB", s.Name, s.Size/1024)
		}
	}
	fmt.Printf("\n\n")
	type row struct {
		pkg  string
		size int64
	}
	var rows []row
	for p, s := range sums {
		rows = append(rows, row{p, s})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].size > rows[j].size })
	fmt.Printf("| package | KiB | share of symbols |\n|---|---|---|\n")
	for i, r := range rows {
		if i == *top {
			break
		}
		fmt.Printf("| %s | %d | %.1f%% |\n", r.pkg, r.size/1024, float64(r.size)*100/float64(total))
	}
	fmt.Printf("| (all %d) | %d | 100%% |\n", len(rows), total/1024)
}

// Package is the Go package a symbol belongs to.
func Package(name string) string {
	switch {
	case strings.HasPrefix(name, "type:"):
		name = strings.TrimLeft(strings.TrimPrefix(name, "type:"), "*[]")
		if strings.HasPrefix(name, "map") || strings.HasPrefix(name, "func") || strings.HasPrefix(name, "struct") ||
			strings.HasPrefix(name, "chan") || strings.HasPrefix(name, "interface") || strings.HasPrefix(name, ".") {
			return "go:types"
		}
	case strings.HasPrefix(name, "go:"), strings.HasPrefix(name, "gclocals"):
		return "go:"
	}
	// Cut generic instantiations and method receivers: pkg.F[...], pkg.(*T).M.
	end := len(name)
	if i := strings.IndexAny(name, "[("); i >= 0 {
		end = i
	}
	head := name[:end]
	slash := strings.LastIndex(head, "/")
	dot := strings.Index(head[slash+1:], ".")
	if dot < 0 {
		if slash < 0 {
			return "C"
		}
		return head
	}
	return head[:slash+1+dot]
}

// Group cuts a package path to its module-ish prefix.
func Group(p string) string {
	parts := strings.Split(p, "/")
	n := 1
	switch {
	case !strings.Contains(parts[0], "."):
		return p // the standard library by package
	case parts[0] == "github.com", parts[0] == "golang.org", parts[0] == "go.yaml.in", parts[0] == "gopkg.in":
		n = 3
	case parts[0] == "google.golang.org", parts[0] == "k8s.io", parts[0] == "sigs.k8s.io", parts[0] == "go.opentelemetry.io":
		n = 2
	}
	if len(parts) < n {
		n = len(parts)
	}
	return strings.Join(parts[:n], "/")
}
