package mapper

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDesiredValuesOutsideTheModelRangeAreRefusedBeforeTheDriver(t *testing.T) {
	for _, tc := range []struct {
		typ, min, max, desired, err string
	}{
		{"FLOAT", "5", "30", "21.5", ""},
		{"FLOAT", "5", "30", "99", "99 is above the model's maximum 30"},
		{"INT", "0", "100", "-1", "-1 is below the model's minimum 0"},
		{"INT", "", "", "123456", ""},
		{"BOOLEAN", "0", "1", "true", ""},
		{"FLOAT", "low", "high", "1e9", ""}, // bounds that are not numbers are not checked
	} {
		v, err := ParseValue(tc.typ, tc.desired)
		if err != nil {
			t.Fatal(err)
		}
		err = checkRange(Property{Name: "p", Type: tc.typ, Minimum: tc.min, Maximum: tc.max}, v)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Fatalf("%s %s in [%s, %s]: %v; want %q", tc.typ, tc.desired, tc.min, tc.max, err, tc.err)
		}
	}
}

func TestPropertyErrorsAreSortedJSONOfReadAndWriteErrorsAndEmptyWhenNoneFails(t *testing.T) {
	l := &devLoop{props: []*propState{
		{Property: Property{Name: "b"}, fails: 2, lastErr: errors.New("timeout")},
		{Property: Property{Name: "a"}, writeErr: errors.New("read-only")},
		{Property: Property{Name: "c"}},
	}}
	if got, want := l.propErrors(), `{"a":{"write":"read-only"},"b":{"read":"timeout"}}`; got != want {
		t.Fatalf("propErrors = %s, want %s", got, want)
	}
	l.props = l.props[2:]
	if got := l.propErrors(); got != "" {
		t.Fatalf("propErrors with nothing failing = %q, want empty", got)
	}
}

// A change of which properties fail is reported at once; a change of the error texts only (a
// timeout's duration, a request ID in a codec error) at most once per HealthCycle.
func TestPropertyErrorTextChangesAreReportedAtMostOncePerHealthCycle(t *testing.T) {
	now := time.Now()
	p := &propState{Property: Property{Name: "t"}, fails: 1, lastErr: errors.New("no reply within 2.99s")}
	l := &devLoop{props: []*propState{p}}
	if !l.propErrorsDue(now) {
		t.Fatal("a new failing property is not due at once")
	}
	l.propErrs, l.propErrsShape = l.propErrorsShape()
	l.nextErrText = now.Add(time.Second)
	p.lastErr = errors.New("no reply within 2.98s")
	if l.propErrorsDue(now) {
		t.Fatal("a text-only change is due before the health cycle passed")
	}
	if !l.propErrorsDue(now.Add(time.Second)) {
		t.Fatal("a text-only change is not due after the health cycle")
	}
	p.writeErr = errors.New("read-only")
	if !l.propErrorsDue(now) {
		t.Fatal("a new write error is not due at once")
	}
	p.fails, p.writeErr = 0, nil
	if !l.propErrorsDue(now) {
		t.Fatal("the errors clearing is not due at once")
	}
}
