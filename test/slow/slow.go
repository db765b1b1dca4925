// Package slow scales the deadlines tests wait on, so a suite that passes on a quiet machine also
// passes on a busy or slow one (a 2-core CI box running other jobs, an ARM board, qemu).
//
// Tests wait on conditions, never on durations; a deadline only says when to give up. Scale it with
// KEDGE_TEST_TIMEOUT_SCALE, a number ≥ 1 (default 1; `make test-under-load` sets it):
//
//	waitFor(t, slow.Scale(30*time.Second), ...)
//
// The package depends on nothing in Kedge, so tests anywhere (sdk/, host/, plugins/, wasm/) may use it.
package slow

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Env is the environment variable holding the factor.
const Env = "KEDGE_TEST_TIMEOUT_SCALE"

var factor = sync.OnceValues(func() (float64, error) { return parse(os.Getenv(Env)) })

func parse(s string) (float64, error) {
	if s == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 1 || f > 1000 {
		return 1, fmt.Errorf("%s=%q: want a number from 1 to 1000 (how much longer than on a quiet machine tests may wait)", Env, s)
	}
	return f, nil
}

// Factor is KEDGE_TEST_TIMEOUT_SCALE (1 when unset). A value that is not a number from 1 to 1000
// panics, naming the variable: a typo must not silently keep the short deadlines.
func Factor() float64 {
	f, err := factor()
	if err != nil {
		panic(err)
	}
	return f
}

// Scale returns d times Factor.
func Scale(d time.Duration) time.Duration {
	return time.Duration(float64(d) * Factor())
}
