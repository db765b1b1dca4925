// Command plugin-registry builds, signs, checks and serves a Kedge plugin registry: a folder of
// artifacts named by sha256 and an ed25519-signed index.json listing them.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/plugin-registry/client"
	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/plugin-registry/registry"
	"github.com/kedge-io/kedge/plugin-registry/server"
	"github.com/kedge-io/kedge/sdk"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed or the index/artifact was refused
	exitUsage   = 2 // bad flags or arguments
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type usageError struct{ error }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRoot()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "plugin-registry: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "plugin-registry",
		Short: "Build, sign, verify and serve a signed index of Kedge plugins",
		Long: `plugin-registry manages a Kedge plugin registry: a folder holding every published artifact
(named by its sha256) and index.json, an index of plugins signed with ed25519.

Each plugin version lists its kind (module or mapper), the module API it needs, and its artifacts:
a process executable per os/arch, or a WASM module whose manifest capabilities are copied into the
index. Edge nodes trust the registry's public key, not the server: they refuse an index signed by
another key, an altered one, one older than the last they accepted (rollback) or one past its expiry
(freeze), and any artifact whose size or sha256 differ from the index.

The workflow: keygen once, publish artifacts (into an unsigned working index), sign (a new index
version valid for --expires; re-sign before it runs out), then serve the folder over HTTPS.`,
		Example: `  plugin-registry keygen --out ~/.kedge/registry-key
  plugin-registry publish --dir ./reg --name modbus --version 1.2.0 --kind mapper --runtime process --os linux --arch arm64 ./modbus-linux-arm64
  plugin-registry publish --dir ./reg --name thermo-codec --version 2.0.0 --kind module --runtime wasm ./thermo-codec.wasm
  plugin-registry sign --dir ./reg --key ~/.kedge/registry-key/registry.key --expires 720h
  plugin-registry verify --dir ./reg --key ~/.kedge/registry-key/registry.pub
  plugin-registry serve --dir ./reg --addr :10443 --tls-cert server.crt --tls-key server.key --client-ca ca.crt
  plugin-registry ls --url https://registry:10443/ --ca ca.crt --cert node.crt --cert-key node.key`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	root.AddCommand(keygenCmd(), publishCmd(), signCmd(), verifyCmd(), lsCmd(), serveCmd())
	return root
}

func keygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out DIR",
		Short: "Create the registry's ed25519 signing key pair",
		Long: `keygen writes DIR/` + index.PrivateKeyFile + ` (PKCS#8 PEM, mode 0600: keep it offline or in a vault; whoever
holds it can make edge nodes install anything) and DIR/` + index.PublicKeyFile + ` (PKIX PEM: give it to every edge
node; it is what they verify the index against). It never overwrites an existing private key.`,
		Example: `  plugin-registry keygen --out /etc/kedge/registry`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := index.WriteKeyPair(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (private, 0600) and %s; key id %s\n",
				filepath.Join(out, index.PrivateKeyFile), filepath.Join(out, index.PublicKeyFile), index.KeyID(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "folder to write the key pair into (created if missing; required)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func publishCmd() *cobra.Command {
	req := registry.PublishRequest{API: sdk.APIVersion}
	var dir string
	cmd := &cobra.Command{
		Use:   "publish --dir REGISTRY --name NAME --version SEMVER --kind module|mapper --runtime process|wasm [--os GOOS --arch GOARCH] ARTIFACT",
		Short: "Copy an artifact into the registry and add it to the unsigned working index",
		Long: `publish copies ARTIFACT into REGISTRY/artifacts/<sha256> and records it in REGISTRY/` + registry.DraftFile + `
under NAME at VERSION (semver, e.g. 1.4.2). Publishing the same name and version again adds another
runtime or os/arch, or replaces the artifact for the same one. A process artifact names the os/arch it
runs on (default: this machine's). A wasm artifact must be packed with its kedge.manifest (wasmpack
-manifest); the capabilities it asks for are copied into the index, so a rollout can check them.

Nothing changes for clients until you run sign.`,
		Example: `  plugin-registry publish --dir ./reg --name modbus --version 1.2.0 --kind mapper --runtime process --os linux --arch arm64 _bin/modules/modbus
  plugin-registry publish --dir ./reg --name echo --version 1.0.0 --kind module --runtime wasm _bin/wasm/echo.wasm`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Path = args[0]
			if req.Runtime == index.RuntimeProcess {
				if req.OS == "" {
					req.OS = runtime.GOOS
				}
				if req.Arch == "" {
					req.Arch = runtime.GOARCH
				}
			}
			req.Progress = func(format string, a ...any) { fmt.Fprintf(cmd.OutOrStdout(), format+"\n", a...) }
			p, err := registry.Publish(dir, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s now has %d artifact(s); run sign to publish the index\n", p.Name, p.Version, len(p.Artifacts))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "registry folder (created if missing; required)")
	f.StringVar(&req.Name, "name", "", "plugin name: lower-case letters, digits and '-' (required)")
	f.StringVar(&req.Version, "version", "", "plugin version, semver without a leading v (required)")
	f.StringVar(&req.Kind, "kind", "", "module or mapper (required)")
	f.StringVar(&req.Runtime, "runtime", "", "process or wasm (required)")
	f.StringVar(&req.OS, "os", "", "process only: GOOS the executable runs on (default this machine's)")
	f.StringVar(&req.Arch, "arch", "", "process only: GOARCH the executable runs on (default this machine's)")
	f.StringVar(&req.API, "api", sdk.APIVersion, "module API version the plugin was built for")
	for _, n := range []string{"dir", "name", "version", "kind", "runtime"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func signCmd() *cobra.Command {
	var dir, key string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "sign --dir REGISTRY --key PRIVATE-KEY [--expires 720h]",
		Short: "Sign the working index as the next index version",
		Long: `sign writes REGISTRY/index.json: the working index with a version one higher than the last one
signed, issued now and valid for --expires, in an envelope signed with the private key. Clients refuse
the index once it expires, so re-sign (even with no change) well before that: a cron job running sign
daily with --expires 720h leaves a month for anything to go wrong.`,
		Example: `  plugin-registry sign --dir ./reg --key /etc/kedge/registry/registry.key
  plugin-registry sign --dir ./reg --key registry.key --expires 168h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			priv, err := index.ReadPrivateKey(key)
			if err != nil {
				return err
			}
			idx, err := registry.Sign(dir, priv, expires, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s: index version %d, %d plugin version(s), key id %s, expires %s\n",
				filepath.Join(dir, registry.SignedFile), idx.Version, len(idx.Plugins), index.KeyID(priv.Public().(ed25519.PublicKey)), idx.Expires.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "registry folder (required)")
	cmd.Flags().StringVar(&key, "key", "", "private key file written by keygen (required)")
	cmd.Flags().DurationVar(&expires, "expires", 720*time.Hour, "how long the signed index stays valid")
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

// source is --dir or --url plus the TLS flags to reach a URL.
type source struct {
	dir, url, ca, cert, certKey string
}

func (s *source) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.dir, "dir", "", "registry folder (this or --url)")
	f.StringVar(&s.url, "url", "", "registry URL, e.g. https://cloud:10443/ (this or --dir)")
	f.StringVar(&s.ca, "ca", "", "--url: CA certificate(s) to trust for the server (default: the system's)")
	f.StringVar(&s.cert, "cert", "", "--url: client certificate for mutual TLS (e.g. the node certificate)")
	f.StringVar(&s.certKey, "cert-key", "", "--url: the client certificate's private key")
	cmd.MarkFlagsMutuallyExclusive("dir", "url")
	cmd.MarkFlagsOneRequired("dir", "url")
	cmd.MarkFlagsRequiredTogether("cert", "cert-key")
}

func (s *source) client(trusted []ed25519.PublicKey) (*client.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.ca != "" {
		pool, err := server.LoadCertPool(s.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if s.cert != "" {
		c, err := tls.LoadX509KeyPair(s.cert, s.certKey)
		if err != nil {
			return nil, fmt.Errorf("--cert/--cert-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return client.New(s.url, trusted, sdk.APIVersion, cfg)
}

func (s *source) indexBytes(ctx context.Context) ([]byte, error) {
	if s.dir != "" {
		return os.ReadFile(filepath.Join(s.dir, registry.SignedFile))
	}
	c, err := s.client(nil)
	if err != nil {
		return nil, err
	}
	return c.Fetch(ctx, "index.json", client.MaxIndexSize)
}

func verifyCmd() *cobra.Command {
	var src source
	var key, state string
	var artifacts bool
	cmd := &cobra.Command{
		Use:   "verify --dir REGISTRY|--url URL --key PUBLIC-KEY [--state FILE]",
		Short: "Check the signed index (and its artifacts) as an edge node would",
		Long: `verify checks index.json the way an edge node does: signed by the given public key, not altered,
well-formed, not expired, and (with --state) not older than the last index accepted, which it then
records. With --artifacts (the default) it also reads every artifact and checks its size and sha256.
It exits 1 naming the first problem.`,
		Example: `  plugin-registry verify --dir ./reg --key registry.pub
  plugin-registry verify --url https://cloud:10443/ --ca ca.crt --cert node.crt --cert-key node.key --key registry.pub --state /var/lib/kedge/registry.state`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := index.ReadPublicKey(key)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "fetching index.json from %s\n", src.where())
			data, err := src.indexBytes(cmd.Context())
			if err != nil {
				return err
			}
			var sf *index.StateFile
			var last index.State
			if state != "" {
				sf = &index.StateFile{Path: state}
				if last, err = sf.Load(); err != nil {
					return err
				}
			}
			idx, st, err := index.Verify(data, index.Policy{Trusted: []ed25519.PublicKey{pub}, Last: last})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "index version %d signed by key %s, issued %s, expires %s: ok\n",
				idx.Version, index.KeyID(pub), idx.IssuedAt.Format(time.RFC3339), idx.Expires.Format(time.RFC3339))
			if artifacts {
				var c *client.Client
				if src.url != "" {
					if c, err = src.client([]ed25519.PublicKey{pub}); err != nil {
						return err
					}
				}
				for _, p := range idx.Plugins {
					for _, a := range p.Artifacts {
						fmt.Fprintf(out, "checking %s %s %s (%d bytes)\n", p.Name, p.Version, a.Target(), a.Size)
						if err := checkArtifact(cmd.Context(), c, src.dir, a); err != nil {
							return fmt.Errorf("%s %s %s: %w", p.Name, p.Version, a.Target(), err)
						}
					}
				}
			}
			if sf != nil {
				if err := sf.Save(st); err != nil {
					return err
				}
				fmt.Fprintf(out, "recorded index version %d in %s\n", st.Version, state)
			}
			fmt.Fprintln(out, "verified")
			return nil
		},
	}
	src.flags(cmd)
	cmd.Flags().StringVar(&key, "key", "", "the registry's public key (registry.pub; required)")
	cmd.Flags().StringVar(&state, "state", "", "file recording the last accepted index version (refuses rollbacks across runs)")
	cmd.Flags().BoolVar(&artifacts, "artifacts", true, "also download/read every artifact and check its size and sha256")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func (s *source) where() string {
	if s.dir != "" {
		return s.dir
	}
	return s.url
}

func checkArtifact(ctx context.Context, c *client.Client, dir string, a index.Artifact) error {
	if c != nil {
		return c.CheckRemote(ctx, a)
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(a.URL)))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = index.CheckArtifact(a, f)
	return err
}

func lsCmd() *cobra.Command {
	var src source
	var key string
	var draft bool
	cmd := &cobra.Command{
		Use:   "ls --dir REGISTRY|--url URL [--key PUBLIC-KEY]",
		Short: "List the plugins in a registry's index",
		Long: `ls prints one line per plugin artifact. With --key the index is verified first (as verify does,
without artifacts); without it the signature is not checked and ls says so. --draft lists the unsigned
working index of a --dir registry instead.`,
		Example: `  plugin-registry ls --dir ./reg
  plugin-registry ls --dir ./reg --draft
  plugin-registry ls --url https://cloud:10443/ --ca ca.crt --key registry.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			var idx *index.Index
			var err error
			switch {
			case draft:
				if src.dir == "" {
					return usageError{errors.New("--draft needs --dir")}
				}
				if idx, err = registry.LoadDraft(src.dir); err != nil {
					return err
				}
				fmt.Fprintf(out, "working index (unsigned) of %s\n", src.dir)
			default:
				data, err := src.indexBytes(cmd.Context())
				if err != nil {
					return err
				}
				if key != "" {
					pub, err := index.ReadPublicKey(key)
					if err != nil {
						return err
					}
					if idx, _, err = index.Verify(data, index.Policy{Trusted: []ed25519.PublicKey{pub}}); err != nil {
						return err
					}
					fmt.Fprintf(out, "index version %d, signature by %s verified, expires %s\n", idx.Version, index.KeyID(pub), idx.Expires.Format(time.RFC3339))
				} else {
					if idx, err = index.Unverified(data); err != nil {
						return err
					}
					fmt.Fprintf(out, "index version %d, expires %s (signature NOT checked: pass --key)\n", idx.Version, idx.Expires.Format(time.RFC3339))
				}
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tKIND\tAPI\tRUNTIME\tSIZE\tSHA256\tCAPABILITIES")
			for _, p := range idx.Plugins {
				for _, a := range p.Artifacts {
					caps := "-"
					if a.Runtime == index.RuntimeWASM && p.Capabilities != nil {
						caps = capSummary(p)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, p.Version, p.Kind, p.API, a.Target(), a.Size, a.SHA256[:12], caps)
				}
			}
			return tw.Flush()
		},
	}
	src.flags(cmd)
	cmd.Flags().StringVar(&key, "key", "", "verify the index with this public key first")
	cmd.Flags().BoolVar(&draft, "draft", false, "list the unsigned working index (--dir only)")
	return cmd
}

func capSummary(p index.Plugin) string {
	c := p.Capabilities
	s := fmt.Sprintf("send modules=%v groups=%v resources=%v", c.Send.Modules, c.Send.Groups, c.Send.Resources)
	if c.Store {
		s += " store"
	}
	if c.Log {
		s += " log"
	}
	return s
}

func serveCmd() *cobra.Command {
	var dir, addr, cert, key, clientCA string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "serve --dir REGISTRY --addr HOST:PORT --tls-cert FILE --tls-key FILE [--client-ca FILE]",
		Short: "Serve index.json and artifacts over HTTPS",
		Long: `serve answers GET /index.json and GET /artifacts/<sha256> from the registry folder, over HTTPS.
With --client-ca every client must present a certificate signed by that CA: give it cloudcore's CA and
edge nodes authenticate with their node certificates. The server holds no signing key; re-signing or
publishing into the folder takes effect on the next request. --insecure serves plain HTTP (tests only:
the index is still signed, but anyone on the path sees what nodes download).`,
		Example: `  plugin-registry serve --dir ./reg --addr :10443 --tls-cert server.crt --tls-key server.key --client-ca /etc/kubeedge/ca/rootCA.crt
  plugin-registry serve --dir ./reg --addr 127.0.0.1:8080 --insecure`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("--dir %s: not a registry folder", dir)
			}
			var tlsCfg *tls.Config
			if !insecure {
				var err error
				if tlsCfg, err = server.TLSConfig(cert, key, clientCA); err != nil {
					return err
				}
			} else if cert != "" || clientCA != "" {
				return usageError{errors.New("--insecure serves plain HTTP: drop --tls-cert/--client-ca or --insecure")}
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			srv := server.NewServer(server.Handler(dir, log), tlsCfg, log)
			scheme := "https"
			if insecure {
				scheme = "http"
			}
			log.Info("serving plugin registry", "dir", dir, "url", scheme+"://"+ln.Addr().String()+"/", "mutualTLS", clientCA != "")
			errc := make(chan error, 1)
			go func() {
				if insecure {
					errc <- srv.Serve(ln)
				} else {
					errc <- srv.ServeTLS(ln, "", "")
				}
			}()
			select {
			case err := <-errc:
				return err
			case <-cmd.Context().Done():
			}
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return err
			}
			if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "registry folder (required)")
	f.StringVar(&addr, "addr", ":10443", "listen address")
	f.StringVar(&cert, "tls-cert", "", "server certificate (PEM)")
	f.StringVar(&key, "tls-key", "", "server private key (PEM)")
	f.StringVar(&clientCA, "client-ca", "", "require client certificates signed by this CA (mutual TLS)")
	f.BoolVar(&insecure, "insecure", false, "plain HTTP, for tests only")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
