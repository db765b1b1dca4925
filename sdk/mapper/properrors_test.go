package mapper

import (
	"errors"
	"strings"
	"testing"
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
