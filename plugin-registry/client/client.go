// Package client fetches a plugin index and artifacts from a registry and refuses anything the
// index package refuses: untrusted or bad signatures, malformed documents, rollbacks, expired
// indexes, tampered artifacts and plugins built for another module API.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/kedge-io/kedge/plugin-registry/index"
)

// MaxIndexSize bounds how much of index.json is read.
const MaxIndexSize = 16 << 20

// Client talks to one registry.
type Client struct {
	// Base is the registry's URL; index.json is Base + "index.json" and artifact URLs resolve
	// against it.
	Base *url.URL
	// HTTP does the requests (nil: a client with no timeout; cancel through the context).
	HTTP *http.Client
	// Trusted are the registry's public keys.
	Trusted []ed25519.PublicKey
	// State records the last accepted index version (nil: rollback is only checked within this
	// Client's lifetime).
	State *index.StateFile
	// API is the module API version this host speaks (sdk.APIVersion).
	API string
	// Now is the clock expiry is checked against (nil: time.Now).
	Now func() time.Time

	last index.State
}

// New returns a client of the registry at base ("https://cloud:10002/plugins/").
func New(base string, trusted []ed25519.PublicKey, api string, tlsCfg *tls.Config) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("registry URL %q: %w", base, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("registry URL %q: scheme must be https (or http in tests)", base)
	}
	if u.Path == "" || u.Path[len(u.Path)-1] != '/' {
		u.Path += "/"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &Client{Base: u, HTTP: &http.Client{Transport: tr}, Trusted: trusted, API: api}, nil
}

// Index fetches and verifies index.json against the trusted keys and the recorded state, and, once
// it passes, records its version.
func (c *Client) Index(ctx context.Context) (*index.Index, error) {
	data, err := c.Fetch(ctx, "index.json", MaxIndexSize)
	if err != nil {
		return nil, err
	}
	last := c.last
	if c.State != nil {
		st, err := c.State.Load()
		if err != nil {
			return nil, err
		}
		if st.Version > last.Version {
			last = st
		}
	}
	pol := index.Policy{Trusted: c.Trusted, Last: last}
	if c.Now != nil {
		pol.Now = c.Now()
	}
	idx, st, err := index.Verify(data, pol)
	if err != nil {
		return nil, err
	}
	if c.State != nil {
		if err := c.State.Save(st); err != nil {
			return nil, err
		}
	}
	c.last = st
	return idx, nil
}

// Download fetches the artifact of p for runtime (and os/arch for process) into dst, refusing a
// plugin for another module API and an artifact whose size or sha256 differ from the index. dst
// appears only once the content is checked (written beside it, then renamed), with mode 0755 for a
// process artifact and 0644 for WASM.
func (c *Client) Download(ctx context.Context, p *index.Plugin, runtime, goos, goarch, dst string) (*index.Artifact, error) {
	if err := p.CheckAPI(c.API); err != nil {
		return nil, err
	}
	a, err := p.Artifact(runtime, goos, goarch)
	if err != nil {
		return nil, err
	}
	u, err := c.resolve(a.URL)
	if err != nil {
		return nil, err
	}
	body, err := c.open(ctx, u)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".download-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := index.CheckArtifact(*a, io.TeeReader(body, tmp)); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("%s %s: %w", p.Name, p.Version, err)
	}
	mode := os.FileMode(0o644)
	if runtime == index.RuntimeProcess {
		mode = 0o755
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, err
	}
	return a, nil
}

// CheckRemote downloads an artifact and checks it without keeping it (verify --url).
func (c *Client) CheckRemote(ctx context.Context, a index.Artifact) error {
	u, err := c.resolve(a.URL)
	if err != nil {
		return err
	}
	body, err := c.open(ctx, u)
	if err != nil {
		return err
	}
	defer body.Close()
	_, err = index.CheckArtifact(a, body)
	return err
}

func (c *Client) resolve(ref string) (*url.URL, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("artifact URL %q: %w", ref, err)
	}
	return c.Base.ResolveReference(r), nil
}

// Fetch GETs ref (relative to Base) and returns at most limit bytes of it, unchecked.
func (c *Client) Fetch(ctx context.Context, ref string, limit int64) ([]byte, error) {
	u, err := c.resolve(ref)
	if err != nil {
		return nil, err
	}
	body, err := c.open(ctx, u)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, limit)
	}
	return data, nil
}

func (c *Client) open(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, msg)
	}
	return resp.Body, nil
}
