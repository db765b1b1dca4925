package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk"
)

func init() { spec.Commands = append(spec.Commands, joinCommand()) }

type joinFlags struct {
	address, token, nodeName, dataDir, configOut string
	criEndpoint                                  string
	registryKeys                                 []string
	certPort, hubPort, streamPort                int
	force, noRuntime, install                    bool
	unitDir                                      string
}

// joinCommand is "edgecore join": get a certificate from cloudcore and write edgecore.yaml.
func joinCommand() *cobra.Command {
	host, _ := os.Hostname()
	f := joinFlags{nodeName: strings.ToLower(host)}
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Join this node to a cloudcore: get its certificate and write edgecore.yaml",
		Long: `Join this node to a cloudcore with a token from 'cloudcore token create':

  1. fetch the CA certificate from https://<cloudcore-address>:<cert-port>/ca.crt and check that
     its SHA-256 is the one in the token (if not, stop: the token is for another cloudcore, or
     someone is in between);
  2. make a private key and send a certificate request, authenticated by the token, over TLS
     verified with that CA; cloudcore answers with a certificate for system:node:<node-name>;
  3. store ca.crt, node.crt and node.key (mode 0600) in <data-dir>/certs;
  4. write edgecore.yaml with the node name, the store, the edgehub module pointing at cloudcore, and
     edged on the container runtime at --cri-endpoint (or, with --no-runtime, noruntime);
  5. with --stream-port (cloudcore runs cloudstream), edgestream: kubectl logs, exec, attach,
     port-forward and top reach this node's pods through the stream tunnel, no iptables rules;
  6. with --registry-key, pluginmanager: PluginRollouts install plugins from cloudcore's registry
     (https://<cloudcore-address>:<cert-port>/registry, this node's certificate), verified with
     these pinned ed25519 keys.

A token allows the joins 'cloudcore token create' gave it (one by default) and, if made with
--node, only that node name. A node name that holds a valid certificate cannot join again (409):
to re-install such a node, use a token from 'cloudcore token create --node <name> --replace'.

Then start edgecore with --config <config-out>. The certificate renews itself before it expires.
Bad input (a malformed token, a CA hash mismatch, an unreachable server) exits with code 2.`,
		Example: `  edgecore join --cloudcore-address cloud.example.com --token 3f1c...e9.eyJhbGciOiJIUzI1NiJ9...
  edgecore join --cloudcore-address 10.0.0.5 --token "$TOKEN" --node-name edge-1 --data-dir /data/kedge
  edgecore join --cloudcore-address cloud.example.com --token "$TOKEN" --config-out ./edgecore.yaml --force
  edgecore join --cloudcore-address cloud.example.com --token "$TOKEN" --stream-port 10004 --registry-key /etc/kedge/registry.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runJoin(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.address, "cloudcore-address", "", "cloudcore's host name or IP address, without a port (required)")
	fl.StringVar(&f.token, "token", "", "join token printed by 'cloudcore token create' (required)")
	fl.StringVar(&f.nodeName, "node-name", f.nodeName, "this node's name in Kubernetes (a DNS-1123 subdomain)")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/kedge", "edgecore's data folder; the certificates go to <data-dir>/certs")
	fl.StringVar(&f.configOut, "config-out", "/etc/kedge/edgecore.yaml", "where to write edgecore.yaml")
	fl.IntVar(&f.certPort, "cert-port", pki.DefaultCertPort, "cloudcore's certificate server port")
	fl.IntVar(&f.hubPort, "hub-port", pki.DefaultHubPort, "cloudcore's hub (websocket) port")
	fl.BoolVar(&f.force, "force", false, "overwrite --config-out (and with --install, the systemd unit) if it exists")
	fl.BoolVar(&f.install, "install", false, "also write the hardened systemd unit "+UnitName+" into --unit-dir for this config and data folder and, where systemd runs, enable and start it ('edgecore reset' undoes it)")
	fl.StringVar(&f.unitDir, "unit-dir", defaultUnitDir, "with --install: the folder of the systemd unit")
	fl.StringVar(&f.criEndpoint, "cri-endpoint", "unix:///run/containerd/containerd.sock", "the container runtime's CRI socket; edged runs the node's pods there")
	fl.BoolVar(&f.noRuntime, "no-runtime", false, "this node runs no containers (a sensor gateway): its pods are stored and reported NoContainerRuntime")
	fl.IntVar(&f.streamPort, "stream-port", 0, "cloudcore's stream tunnel port (cloudstream's tunnelAddress, usually 10004): turns on edgestream for kubectl logs/exec/attach/port-forward/top; 0 leaves it off (its tunnel counts in /readyz/cloud, so only set it when cloudcore runs cloudstream)")
	fl.StringArrayVar(&f.registryKeys, "registry-key", nil, "an ed25519 public key (PEM file) the plugin registry's index must be signed with; turns on pluginmanager (repeat for key rotation)")
	_ = cmd.MarkFlagRequired("cloudcore-address")
	_ = cmd.MarkFlagRequired("token")
	return cmd
}

func runJoin(cmd *cobra.Command, f joinFlags) error {
	host, err := cloudcoreHost(f.address)
	if err != nil {
		return err
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"--cert-port", f.certPort}, {"--hub-port", f.hubPort}, {"--stream-port", f.streamPort}} {
		if p.flag == "--stream-port" && p.port == 0 {
			continue
		}
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("%s %d: want a port between 1 and 65535", p.flag, p.port)
		}
	}
	if err := pki.CheckNodeName(f.nodeName); err != nil {
		return fmt.Errorf("--node-name: %w", err)
	}
	if _, err := pki.ParseToken(f.token); err != nil {
		return fmt.Errorf("--token: %w", err)
	}
	if f.dataDir == "" || f.configOut == "" {
		return errors.New("--data-dir and --config-out must not be empty")
	}
	if f.streamPort != 0 && f.noRuntime {
		return errors.New("--stream-port: edgestream serves logs and exec from the container runtime; a --no-runtime node has none")
	}
	for i, k := range f.registryKeys {
		abs, err := filepath.Abs(k)
		if err != nil {
			return fmt.Errorf("--registry-key %s: %w", k, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("--registry-key %s: %w", k, err)
		}
		f.registryKeys[i] = abs
	}
	// Refuse before asking cloudcore for anything, so a refused run changes nothing.
	if f.install {
		if err := checkInstall(f.unitDir, f.force); err != nil {
			return err
		}
	}
	if !f.force {
		if _, err := os.Stat(f.configOut); err == nil {
			return fmt.Errorf("%s exists; pass --force to overwrite it, or --config-out to write elsewhere", f.configOut)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check %s: %w", f.configOut, err)
		}
	}

	out := cmd.OutOrStdout()
	certServer := net.JoinHostPort(host, strconv.Itoa(f.certPort))
	res, err := pki.Join(cmd.Context(), pki.JoinOptions{
		CertServer: certServer,
		Token:      f.token,
		NodeName:   f.nodeName,
		Dir:        filepath.Join(f.dataDir, "certs"),
		Progress:   out,
	})
	if err != nil {
		return err
	}
	conf, err := edgecoreYAML(f, host, certServer, res)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.configOut), 0o755); err != nil {
		return fmt.Errorf("create the folder of %s: %w", f.configOut, err)
	}
	if err := writeFile(f.configOut, conf); err != nil {
		return err
	}
	if f.install {
		fmt.Fprintf(out, "wrote %s\njoined as node %s\n", f.configOut, f.nodeName)
		return install(out, f.unitDir, f.configOut, f.dataDir)
	}
	fmt.Fprintf(out, "wrote %s\njoined as node %s; start edgecore with: edgecore --config %s\n", f.configOut, f.nodeName, f.configOut)
	return nil
}

// cloudcoreHost accepts a host name or an IP address (IPv6 with or without brackets), not host:port.
func cloudcoreHost(address string) (string, error) {
	a := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(address), "["), "]")
	if a == "" {
		return "", errors.New("--cloudcore-address is empty; give cloudcore's host name or IP address")
	}
	if net.ParseIP(a) != nil {
		return a, nil
	}
	if strings.ContainsAny(a, ":/ ") {
		return "", fmt.Errorf("--cloudcore-address %q: give only a host name or IP address; the ports are --cert-port and --hub-port", address)
	}
	return a, nil
}

// edgecoreYAML renders the config 'edgecore join' writes; the yaml encoder quotes whatever needs it.
func edgecoreYAML(f joinFlags, host, certServer string, res *pki.JoinResult) ([]byte, error) {
	type edgehub struct {
		Enable     bool   `yaml:"enable"`
		Server     string `yaml:"server"`
		CertServer string `yaml:"certServer"`
		CAFile     string `yaml:"caFile"`
		CertFile   string `yaml:"certFile"`
		KeyFile    string `yaml:"keyFile"`
	}
	type edged struct {
		Enable      bool   `yaml:"enable"`
		CRIEndpoint string `yaml:"criEndpoint,omitempty"`
		RootDir     string `yaml:"rootDir,omitempty"`
	}
	type nodestatus struct {
		CRIEndpoint string `yaml:"criEndpoint,omitempty"`
		StoragePath string `yaml:"storagePath"`
	}
	type noruntime struct {
		Enable bool `yaml:"enable"`
	}
	type metaServer struct {
		CertFile       string `yaml:"certFile"`
		KeyFile        string `yaml:"keyFile"`
		AdminTokenFile string `yaml:"adminTokenFile"`
	}
	type metamanager struct {
		Consumers  map[string]string `yaml:"consumers,omitempty"`
		MetaServer metaServer        `yaml:"metaServer"`
	}
	type dmi struct {
		Socket string `yaml:"socket"`
	}
	type edgestream struct {
		Enable      bool   `yaml:"enable"`
		Server      string `yaml:"server"`
		CAFile      string `yaml:"caFile"`
		CertFile    string `yaml:"certFile"`
		KeyFile     string `yaml:"keyFile"`
		CRIEndpoint string `yaml:"criEndpoint"`
	}
	type pluginmanager struct {
		Enable      bool     `yaml:"enable"`
		RegistryURL string   `yaml:"registryURL"`
		CAFile      string   `yaml:"caFile"`
		CertFile    string   `yaml:"certFile"`
		KeyFile     string   `yaml:"keyFile"`
		TrustedKeys []string `yaml:"trustedKeys"`
		PluginsDir  string   `yaml:"pluginsDir"`
	}
	type config struct {
		Node struct {
			Name string `yaml:"name"`
		} `yaml:"node"`
		Store struct {
			Path string `yaml:"path"`
		} `yaml:"store"`
		Modules struct {
			Edgehub       edgehub        `yaml:"edgehub"`
			Edged         edged          `yaml:"edged"`
			Noruntime     *noruntime     `yaml:"noruntime,omitempty"`
			Metamanager   *metamanager   `yaml:"metamanager,omitempty"`
			Nodestatus    nodestatus     `yaml:"nodestatus"`
			DMI           dmi            `yaml:"dmi"`
			Edgestream    *edgestream    `yaml:"edgestream,omitempty"`
			Pluginmanager *pluginmanager `yaml:"pluginmanager,omitempty"`
		} `yaml:"modules"`
	}
	var c config
	c.Node.Name = f.nodeName
	c.Store.Path = filepath.Join(f.dataDir, "edgecore.db")
	c.Modules.Edgehub = edgehub{
		Enable:     true,
		Server:     net.JoinHostPort(host, strconv.Itoa(f.hubPort)),
		CertServer: certServer,
		CAFile:     res.CAFile,
		CertFile:   res.CertFile,
		KeyFile:    res.KeyFile,
	}
	// The node runs its pods: edged on the container runtime, or, with --no-runtime (a sensor gateway),
	// noruntime answers for them. Everything the node keeps lives under --data-dir.
	c.Modules.Nodestatus = nodestatus{StoragePath: f.dataDir}
	c.Modules.DMI = dmi{Socket: filepath.Join(f.dataDir, "dmi.sock")}
	// Node agents read the MetaServer with the node-admin token in this file (root only).
	// (HTTPS with a node-local self-signed certificate: kubectl sends tokens only over TLS).
	c.Modules.Metamanager = &metamanager{MetaServer: metaServer{CertFile: filepath.Join(f.dataDir, "metaserver.crt"),
		KeyFile: filepath.Join(f.dataDir, "metaserver.key"), AdminTokenFile: filepath.Join(f.dataDir, "metaserver-admin.token")}}
	if f.noRuntime {
		c.Modules.Noruntime = &noruntime{Enable: true}
		c.Modules.Metamanager.Consumers = map[string]string{"pod": "noruntime"}
	} else {
		c.Modules.Edged = edged{Enable: true, CRIEndpoint: f.criEndpoint, RootDir: filepath.Join(f.dataDir, "edged")}
		c.Modules.Nodestatus.CRIEndpoint = f.criEndpoint
	}
	// Optional cloud services the node uses with the same certificate: the stream tunnel and the
	// plugin registry (served on the certificate server's port).
	if f.streamPort != 0 {
		c.Modules.Edgestream = &edgestream{Enable: true, Server: net.JoinHostPort(host, strconv.Itoa(f.streamPort)),
			CAFile: res.CAFile, CertFile: res.CertFile, KeyFile: res.KeyFile, CRIEndpoint: f.criEndpoint}
	}
	if len(f.registryKeys) > 0 {
		c.Modules.Pluginmanager = &pluginmanager{Enable: true, RegistryURL: "https://" + certServer + "/registry",
			CAFile: res.CAFile, CertFile: res.CertFile, KeyFile: res.KeyFile, TrustedKeys: f.registryKeys,
			PluginsDir: filepath.Join(f.dataDir, "plugins")}
	}
	// Only the modules this build carries: a device class without edged (or dmi, nodestatus, ...) would
	// refuse a config naming a module it does not have.
	var doc yaml.Node
	if err := doc.Encode(&c); err != nil {
		return nil, fmt.Errorf("render edgecore.yaml: %w", err)
	}
	inBuild := map[string]bool{}
	for _, info := range sdk.Registered() {
		inBuild[info.Name] = true
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value != "modules" {
			continue
		}
		mods := doc.Content[i+1]
		var kept []*yaml.Node
		for j := 0; j+1 < len(mods.Content); j += 2 {
			if inBuild[mods.Content[j].Value] {
				kept = append(kept, mods.Content[j], mods.Content[j+1])
			}
		}
		mods.Content = kept
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("render edgecore.yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render edgecore.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// writeFile writes through a temporary file and a rename, so a crash never leaves half a config.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
