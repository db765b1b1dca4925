package pki

import "time"

// Clock is the time source of the CA, the certificate server and the Renewer; tests pass a fake.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func orSystem(c Clock) Clock {
	if c == nil {
		return SystemClock
	}
	return c
}
