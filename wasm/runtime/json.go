package wasmruntime

import "encoding/binary"

// validJSON reports whether b is exactly one JSON value with optional surrounding whitespace: the
// same answer as encoding/json.Valid (FuzzValidJSON holds them equal), several times faster.
// Everything a guest sends is checked at the boundary, and encoding/json's scanner (~150 MB/s here)
// would spend 7 µs on a 1 KiB message, more than the whole round-trip budget.
func validJSON(b []byte) bool {
	v := validator{b: b}
	v.space()
	if !v.value(0) {
		return false
	}
	v.space()
	return v.i == len(b)
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

type validator struct {
	b []byte
	i int
}

func (v *validator) space() {
	for v.i < len(v.b) {
		switch v.b[v.i] {
		case ' ', '\t', '\n', '\r':
			v.i++
		default:
			return
		}
	}
}

// at reports whether the next byte is c, and consumes it if so.
func (v *validator) at(c byte) bool {
	if v.i < len(v.b) && v.b[v.i] == c {
		v.i++
		return true
	}
	return false
}

// value parses one value; depth is the number of enclosing objects and arrays.
func (v *validator) value(depth int) bool {
	if v.i >= len(v.b) {
		return false
	}
	switch c := v.b[v.i]; {
	case c == '{':
		return depth < maxDepth && v.object(depth+1)
	case c == '[':
		return depth < maxDepth && v.array(depth+1)
	case c == '"':
		return v.string()
	case c == 't':
		return v.literal("true")
	case c == 'f':
		return v.literal("false")
	case c == 'n':
		return v.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return v.number()
	}
	return false
}

func (v *validator) object(depth int) bool {
	v.i++ // {
	v.space()
	if v.at('}') {
		return true
	}
	for {
		if v.i >= len(v.b) || v.b[v.i] != '"' || !v.string() {
			return false
		}
		v.space()
		if !v.at(':') {
			return false
		}
		v.space()
		if !v.value(depth) {
			return false
		}
		v.space()
		if v.at('}') {
			return true
		}
		if !v.at(',') {
			return false
		}
		v.space()
	}
}

func (v *validator) array(depth int) bool {
	v.i++ // [
	v.space()
	if v.at(']') {
		return true
	}
	for {
		if !v.value(depth) {
			return false
		}
		v.space()
		if v.at(']') {
			return true
		}
		if !v.at(',') {
			return false
		}
		v.space()
	}
}

// plain marks the bytes a string holds as themselves: not a quote, a backslash or a control byte.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (v *validator) string() bool {
	b, i := v.b, v.i+1 // past the opening quote
	for {
		// Eight bytes at a time while none needs a look; the byte loop finds the one that does.
		for i+8 <= len(b) && !special(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case '"':
			v.i = i + 1
			return true
		case '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return false
				}
				i += 6
			default:
				return false
			}
		default: // a control byte
			return false
		}
	}
}

// special reports whether one of the eight bytes in x may be a quote, a backslash or a control
// byte (the classic has-zero-byte tricks; a false positive only costs the byte loop).
func special(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(y uint64) uint64 { return (y - ones) & ^y & highs }
	return (x-ones*0x20)&^x&highs|hasZero(x^(ones*'"'))|hasZero(x^(ones*'\\')) != 0
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (v *validator) literal(word string) bool {
	if len(v.b)-v.i < len(word) || string(v.b[v.i:v.i+len(word)]) != word {
		return false
	}
	v.i += len(word)
	return true
}

// number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (v *validator) number() bool {
	b, i := v.b, v.i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	v.i = i
	return true
}

// digits returns the index after the run of digits starting at i.
func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
