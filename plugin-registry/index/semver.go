package index

import (
	"fmt"
	"strconv"
	"strings"
)

// Semver is a parsed semantic version (semver.org 2.0.0): MAJOR.MINOR.PATCH, an optional
// -prerelease and an optional +build (ignored when comparing). A leading "v" is not accepted: the
// index writes versions exactly as semver.org spells them.
type Semver struct {
	Major, Minor, Patch uint64
	Pre                 []string
	Build               string
}

// ParseSemver parses s, saying what is wrong with it.
func ParseSemver(s string) (Semver, error) {
	var v Semver
	rest := s
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		v.Build = rest[i+1:]
		rest = rest[:i]
		if err := identifiers(v.Build, false); err != nil {
			return Semver{}, fmt.Errorf("version %q: build metadata: %v", s, err)
		}
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		pre := rest[i+1:]
		rest = rest[:i]
		if err := identifiers(pre, true); err != nil {
			return Semver{}, fmt.Errorf("version %q: pre-release: %v", s, err)
		}
		v.Pre = strings.Split(pre, ".")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return Semver{}, fmt.Errorf("version %q is not semver MAJOR.MINOR.PATCH (e.g. 1.2.0)", s)
	}
	for i, p := range parts {
		n, err := numeric(p)
		if err != nil {
			return Semver{}, fmt.Errorf("version %q: %s %v", s, [3]string{"major", "minor", "patch"}[i], err)
		}
		*[3]*uint64{&v.Major, &v.Minor, &v.Patch}[i] = n
	}
	return v, nil
}

func numeric(p string) (uint64, error) {
	if p == "" || strings.Trim(p, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number", p)
	}
	if len(p) > 1 && p[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", p)
	}
	n, err := strconv.ParseUint(p, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", p)
	}
	return n, nil
}

func identifiers(s string, pre bool) error {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return fmt.Errorf("empty identifier in %q", s)
		}
		for _, c := range id {
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return fmt.Errorf("%q: identifiers hold only [0-9A-Za-z-]", id)
			}
		}
		if pre && strings.Trim(id, "0123456789") == "" && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("%q has a leading zero", id)
		}
	}
	return nil
}

// Compare returns -1, 0 or +1 as a is lower than, equal to or higher than b in semver precedence.
func (a Semver) Compare(b Semver) int {
	for _, d := range [3][2]uint64{{a.Major, b.Major}, {a.Minor, b.Minor}, {a.Patch, b.Patch}} {
		if d[0] != d[1] {
			return cmpU(d[0], d[1])
		}
	}
	switch {
	case len(a.Pre) == 0 && len(b.Pre) == 0:
		return 0
	case len(a.Pre) == 0: // a release ranks above its pre-releases
		return 1
	case len(b.Pre) == 0:
		return -1
	}
	for i := 0; i < len(a.Pre) && i < len(b.Pre); i++ {
		x, y := a.Pre[i], b.Pre[i]
		xn, xerr := strconv.ParseUint(x, 10, 64)
		yn, yerr := strconv.ParseUint(y, 10, 64)
		switch {
		case xerr == nil && yerr == nil:
			if xn != yn {
				return cmpU(xn, yn)
			}
		case xerr == nil: // numeric identifiers rank below alphanumeric ones
			return -1
		case yerr == nil:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return cmpU(uint64(len(a.Pre)), uint64(len(b.Pre)))
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CompareVersions compares two version strings; an unparsable one ranks lowest.
func CompareVersions(a, b string) int {
	va, ea := ParseSemver(a)
	vb, eb := ParseSemver(b)
	switch {
	case ea != nil && eb != nil:
		return strings.Compare(a, b)
	case ea != nil:
		return -1
	case eb != nil:
		return 1
	}
	return va.Compare(vb)
}
