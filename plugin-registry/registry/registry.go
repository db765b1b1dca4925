// Package registry manages a registry folder: artifacts stored by sha256, an unsigned working index
// that publish edits, and the signed index.json that sign writes and serve hands out.
//
//	REGISTRY/
//	  index.json          signed envelope (what clients fetch)
//	  index.draft.json    unsigned working index (what publish edits)
//	  artifacts/<sha256>  every published artifact, named by its content
package registry

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// Files in a registry folder.
const (
	SignedFile   = "index.json"
	DraftFile    = "index.draft.json"
	ArtifactsDir = "artifacts"
)

// Draft is the unsigned working index: the index with version, issuedAt and expires not yet set
// (they are set at signing).
type Draft struct {
	// LastSigned is the version sign last wrote, kept here too so that losing index.json cannot
	// make the next index start again at version 1 (clients would refuse it as a rollback).
	LastSigned uint64         `json:"lastSigned"`
	Plugins    []index.Plugin `json:"plugins"`
}

// LoadDraft reads dir's working index; a missing one is empty.
func LoadDraft(dir string) (*index.Index, error) {
	data, err := os.ReadFile(filepath.Join(dir, DraftFile))
	if errors.Is(err, os.ErrNotExist) {
		return &index.Index{Format: index.Format}, nil
	}
	if err != nil {
		return nil, err
	}
	var d Draft
	if err := index.DecodeJSON(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, DraftFile), err)
	}
	return &index.Index{Format: index.Format, Version: d.LastSigned, Plugins: d.Plugins}, nil
}

func saveDraft(dir string, idx *index.Index) error {
	idx.Sort()
	d := Draft{LastSigned: idx.Version, Plugins: idx.Plugins}
	if d.Plugins == nil {
		d.Plugins = []index.Plugin{}
	}
	data, err := index.EncodeJSON(d)
	if err != nil {
		return err
	}
	return index.WriteFileAtomic(filepath.Join(dir, DraftFile), data, 0o644)
}

// PublishRequest says what to publish.
type PublishRequest struct {
	Name, Version, Kind string
	API                 string // module API version (sdk.APIVersion)
	Runtime             string // process | wasm
	OS, Arch            string // process only
	Path                string // the artifact file
	// Progress, when set, receives one line per step of a long operation.
	Progress func(format string, args ...any)
}

// Publish copies the artifact into dir/artifacts/<sha256> and adds it to the working index,
// creating the plugin version or replacing its artifact for the same runtime (and os/arch). A WASM
// artifact must carry its kedge.manifest; its capabilities are recorded in the index.
func Publish(dir string, req PublishRequest) (*index.Plugin, error) {
	progress := req.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	if req.Runtime == index.RuntimeWASM && (req.OS != "" || req.Arch != "") {
		return nil, errors.New("--os/--arch: a wasm artifact runs anywhere; leave them out")
	}
	// Check the request before copying anything.
	check := index.Plugin{Name: req.Name, Version: req.Version, Kind: req.Kind, API: req.API,
		Capabilities: &manifest.Capabilities{}, Artifacts: []index.Artifact{{Runtime: req.Runtime, OS: req.OS, Arch: req.Arch,
			URL: "-", SHA256: strings.Repeat("0", 64)}}}
	if err := check.Validate(); err != nil {
		return nil, fmt.Errorf("publish: %v", err)
	}
	src, err := os.Open(req.Path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", req.Path)
	}
	if err := os.MkdirAll(filepath.Join(dir, ArtifactsDir), 0o755); err != nil {
		return nil, err
	}
	progress("copying %s (%s) into %s", req.Path, humanSize(fi.Size()), filepath.Join(dir, ArtifactsDir))
	tmp, err := os.CreateTemp(filepath.Join(dir, ArtifactsDir), ".upload-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("copying %s: %w", req.Path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	p := index.Plugin{Name: req.Name, Version: req.Version, Kind: req.Kind, API: req.API}
	art := index.Artifact{Runtime: req.Runtime, OS: req.OS, Arch: req.Arch, URL: ArtifactsDir + "/" + sum, Size: n, SHA256: sum}
	if req.Runtime == index.RuntimeWASM {
		progress("reading the kedge.manifest section of %s", req.Path)
		data, err := os.ReadFile(tmp.Name())
		if err != nil {
			return nil, err
		}
		m, err := manifest.Read(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", req.Path, err)
		}
		p.Capabilities = &m.Capabilities
	}
	idx, err := LoadDraft(dir)
	if err != nil {
		return nil, err
	}
	entry := &p
	existing, ferr := idx.Find(req.Name, req.Version)
	if ferr == nil {
		if existing.Kind != p.Kind || existing.API != p.API {
			return nil, fmt.Errorf("%s %s is already published as kind %s, api %s: a version's kind and api do not change (publish a new version)",
				req.Name, req.Version, existing.Kind, existing.API)
		}
		if p.Capabilities != nil {
			existing.Capabilities = p.Capabilities
		}
		entry = existing
	}
	replaced := false
	for i := range entry.Artifacts {
		if entry.Artifacts[i].Target() == art.Target() {
			entry.Artifacts[i], replaced = art, true
		}
	}
	if !replaced {
		entry.Artifacts = append(entry.Artifacts, art)
	}
	if err := entry.Validate(); err != nil {
		return nil, fmt.Errorf("%s %s: %v", req.Name, req.Version, err)
	}
	if ferr != nil {
		idx.Plugins = append(idx.Plugins, p)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, ArtifactsDir, sum)); err != nil {
		return nil, err
	}
	if err := saveDraft(dir, idx); err != nil {
		return nil, err
	}
	out, _ := idx.Find(req.Name, req.Version)
	progress("published %s %s (%s) as %s, sha256 %s", req.Name, req.Version, art.Target(), art.URL, sum)
	return out, nil
}

// Sign writes dir/index.json: the working index with a version one higher than both the last
// signed index and the draft's, issued now and expiring after validFor, signed with key.
func Sign(dir string, key ed25519.PrivateKey, validFor time.Duration, now time.Time) (*index.Index, error) {
	if validFor <= 0 {
		return nil, fmt.Errorf("--expires %s: must be positive", validFor)
	}
	idx, err := LoadDraft(dir)
	if err != nil {
		return nil, err
	}
	last, err := LastSignedVersion(dir)
	if err != nil {
		return nil, err
	}
	idx.Version = max(last, idx.Version) + 1
	idx.IssuedAt = now.UTC().Truncate(time.Second)
	idx.Expires = idx.IssuedAt.Add(validFor)
	data, err := index.Sign(idx, key)
	if err != nil {
		return nil, err
	}
	if err := saveDraft(dir, idx); err != nil {
		return nil, err
	}
	if err := index.WriteFileAtomic(filepath.Join(dir, SignedFile), data, 0o644); err != nil {
		return nil, err
	}
	return idx, nil
}

// LastSignedVersion reads the version of dir/index.json (0 when there is none). The signature is
// not checked: this is the signer's own file.
func LastSignedVersion(dir string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(dir, SignedFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	idx, err := index.Unverified(data)
	if err != nil {
		return 0, fmt.Errorf("%s: %w (move it away to start a new index)", filepath.Join(dir, SignedFile), err)
	}
	return idx.Version, nil
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
