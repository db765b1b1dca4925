package pki

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Names of the items a Storage holds.
const (
	CACertName      = "ca.crt"       // the CA certificate, PEM
	CAKeyName       = "ca.key"       // the CA private key, PEM (SEC 1 or PKCS #8)
	TokenSecretName = "token.secret" // the HMAC key join tokens are signed with, hex
	ServerCertName  = "server.crt"   // cloudcore's serving certificate, PEM
	ServerKeyName   = "server.key"   // its private key, PEM
)

// Item is one named blob of a Storage.
type Item struct {
	Name string
	Data []byte
}

// Storage keeps the cloud's PKI material by name. FileStorage keeps it in a directory, SecretStorage
// in a Kubernetes Secret, without the rest of the package noticing.
type Storage interface {
	// Read returns the named item, or an error matching fs.ErrNotExist when it is absent.
	Read(ctx context.Context, name string) ([]byte, error)
	// Write stores the items in order, each atomically: a reader sees an item's old content or
	// its new content, never a mix. Callers put the item whose presence marks completion last.
	Write(ctx context.Context, items ...Item) error
	// String says where the items live, for messages ("/var/lib/kedge/pki").
	String() string
}

// FileStorage keeps each item in a file of Dir. The directory is created with mode 0700 and every
// file is written with mode 0600, since the CA key and the token secret are in it.
type FileStorage struct {
	Dir string
}

var _ Storage = FileStorage{}

func (s FileStorage) String() string { return s.Dir }

// Read reads Dir/name.
func (s FileStorage) Read(_ context.Context, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.Dir, name))
}

// Write writes each item to Dir/name through a temporary file and a rename.
func (s FileStorage) Write(_ context.Context, items ...Item) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", s.Dir, err)
	}
	for _, it := range items {
		if err := writeFileAtomic(filepath.Join(s.Dir, it.Name), it.Data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic writes data to path so that a crash leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is durable only once the directory entry is.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
