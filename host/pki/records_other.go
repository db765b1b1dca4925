//go:build !unix

package pki

import "errors"

// lockFile is not available: FileRecords needs flock(2); use SecretRecords on this platform.
func lockFile(string) (func(), error) {
	return nil, errors.New("file records need flock(2), which this platform lacks; keep the CA in a Secret (caSecret)")
}
