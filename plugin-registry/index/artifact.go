package index

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// CheckArtifact reads r to its end (at most a.Size+1 bytes) and refuses it, wrapping
// ErrArtifactMismatch, unless its size and sha256 are exactly what the index says. It returns the
// number of bytes read.
func CheckArtifact(a Artifact, r io.Reader) (int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, a.Size+1))
	if err != nil {
		return n, fmt.Errorf("artifact %s: %w", a.URL, err)
	}
	if n != a.Size {
		if n > a.Size {
			return n, fmt.Errorf("%w: %s is larger than the %d bytes the index says", ErrArtifactMismatch, a.URL, a.Size)
		}
		return n, fmt.Errorf("%w: %s is %d bytes, the index says %d", ErrArtifactMismatch, a.URL, n, a.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		return n, fmt.Errorf("%w: %s has sha256 %s, the index says %s", ErrArtifactMismatch, a.URL, got, a.SHA256)
	}
	return n, nil
}
