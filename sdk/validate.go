package sdk

import (
	"errors"
	"fmt"
)

// Validator is implemented by modules whose settings have constraints their types do not say (a
// positive count, a minimum interval, two settings that go together). The host calls Validate on
// every enabled module after decoding its settings and before any module starts — at startup, in
// `edgecore validate` / `cloudcore validate` and before a swap — and reports each problem as
// "<file>: modules.<name>.<key>: <problem>" with exit code 2, like its own config errors.
//
// Validate only checks the decoded settings (the module's exported fields); it must not open files,
// dial or start anything. Return nil, one *SettingError, or several joined with errors.Join (all are
// reported); any other error is reported against the module's block as a whole.
type Validator interface {
	Validate() error
}

// SettingError says which of a module's settings is wrong and why. Key is the setting's path inside
// the module's block as the config file writes it ("workers", "quic.server").
type SettingError struct {
	Key     string
	Problem string
}

func (e *SettingError) Error() string { return e.Key + ": " + e.Problem }

// BadSetting returns a *SettingError for key, its problem formatted as fmt.Sprintf does.
func BadSetting(key, format string, args ...any) *SettingError {
	return &SettingError{Key: key, Problem: fmt.Sprintf(format, args...)}
}

// SettingErrors flattens what a Validator returned into its problems, in order: each *SettingError,
// and any other error as one with an empty Key (the module's block as a whole).
func SettingErrors(err error) []*SettingError {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*SettingError
		for _, e := range j.Unwrap() {
			out = append(out, SettingErrors(e)...)
		}
		return out
	}
	var se *SettingError
	if errors.As(err, &se) {
		return []*SettingError{se}
	}
	return []*SettingError{{Problem: err.Error()}}
}

// SettingChecks collects a Validator's problems:
//
//	var c sdk.SettingChecks
//	c.Check(m.Workers > 0, "workers", "must be positive, got %d", m.Workers)
//	return c.Err()
type SettingChecks struct{ errs []error }

// Check records a problem with key unless ok.
func (c *SettingChecks) Check(ok bool, key, format string, args ...any) {
	if !ok {
		c.errs = append(c.errs, BadSetting(key, format, args...))
	}
}

// Add records err (nil is ignored): a *SettingError as it is, any other error against key.
func (c *SettingChecks) Add(key string, err error) {
	if err == nil {
		return
	}
	var se *SettingError
	if errors.As(err, &se) {
		c.errs = append(c.errs, se)
		return
	}
	c.errs = append(c.errs, &SettingError{Key: key, Problem: err.Error()})
}

// Err is nil when every check passed, else all the problems joined.
func (c *SettingChecks) Err() error { return errors.Join(c.errs...) }
