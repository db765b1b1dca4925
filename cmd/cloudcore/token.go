package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
)

func init() { spec.Commands = append(spec.Commands, tokenCommand()) }

// tokenCommand is "cloudcore token": join tokens for edge nodes.
func tokenCommand() *cobra.Command {
	var dir, secret, kubeconfig string
	token := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens for edge nodes (create, ls, revoke)",
		Long: `Join tokens let edge nodes get a node certificate ('edgecore join'). Each token is recorded
where cloudcore's cloudhub keeps its CA — files under --pki-dir (tokens/, nodes/), or Secrets beside
--ca-secret — so the running cloudcore sees tokens created, listed or revoked here at once. Use the
same --pki-dir or --ca-secret as cloudhub (modules.cloudhub.pkiDir / caSecret).`,
		Args: cobra.NoArgs,
	}
	// stores opens the CA's storage and the records beside it, as cloudhub does.
	stores := func() (pki.Storage, pki.Records, string, error) {
		hub := cloudhub.New()
		hub.PKIDir = dir
		where := dir
		if secret != "" {
			ns, name, ok := strings.Cut(secret, "/")
			if !ok || ns == "" || name == "" {
				return nil, nil, "", fmt.Errorf("--ca-secret %q: want <namespace>/<name>", secret)
			}
			hub.CASecret = cloudhub.CASecret{Enable: true, Kubeconfig: kubeconfig, Namespace: ns, Name: name}
			where = "Secret " + secret
		}
		st, recs, err := hub.Stores()
		return st, recs, where, err
	}
	pf := token.PersistentFlags()
	pf.StringVar(&dir, "pki-dir", pki.DefaultCloudDir, "cloudhub's pkiDir: the CA (ca.crt, ca.key, token.secret) and the token records (tokens/, nodes/); created with mode 0700 if missing")
	pf.StringVar(&secret, "ca-secret", "", "<namespace>/<name> of the Secret holding the CA, when cloudhub keeps it in Kubernetes (caSecret); token records are then Secrets in that namespace")
	pf.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for --ca-secret; empty: $KUBECONFIG, else in-cluster")

	var opts pki.TokenOptions
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a new join token (creating the CA first if there is none)",
		Long: `Print a join token for 'edgecore join'. The token is <sha256 of the CA certificate>.<JWT>:
the hash lets the edge node check it is talking to this cloudcore, the JWT (HS256, its ID in jti)
lets cloudcore find the token's record and check it: not revoked, not expired (--ttl), with uses
left (--uses, default 1: one node per token) and, with --node, for that node name only.

A token never takes over a node that holds a valid certificate: such a join is refused (409), and
the node renews its certificate with the certificate itself. To re-install a node whose certificate
is still valid, create a token with --node NAME --replace: the join with it revokes the old
certificate (it can no longer renew) and issues a new one.

If --pki-dir holds no CA yet, one is created there (and said so on stderr).`,
		Example: `  cloudcore token create                          # one node, any name, 24 h
  cloudcore token create --ttl 1h --pki-dir /var/lib/kedge/pki
  cloudcore token create --node edge-1 --ttl 1h  # only for edge-1
  cloudcore token create --uses 10                # ten nodes
  cloudcore token create --node edge-1 --replace  # re-install edge-1 (its old certificate is revoked)
  cloudcore token create --ca-secret kedge-system/kedge-ca --kubeconfig ~/.kube/config
  # then, on the edge node:
  edgecore join --cloudcore-address cloud.example.com --token <the printed token> --node-name edge-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case opts.TTL <= 0:
				return fmt.Errorf("--ttl %s: must be positive, e.g. 24h", opts.TTL)
			case opts.Uses <= 0:
				return fmt.Errorf("--uses %d: must be at least 1", opts.Uses)
			case opts.Replace && opts.Node == "":
				return fmt.Errorf("--replace needs --node: name the node whose certificate the token replaces")
			}
			if opts.Node != "" {
				if err := pki.CheckNodeName(opts.Node); err != nil {
					return fmt.Errorf("--node: %w", err)
				}
			}
			st, recs, where, err := stores()
			if err != nil {
				return err
			}
			ca, created, err := pki.LoadOrCreateCA(cmd.Context(), st)
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(cmd.ErrOrStderr(), "created a new CA in %s (sha256 %s)\n", where, ca.Hash())
			}
			tok, rec, err := pki.CreateToken(cmd.Context(), ca, recs, opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.String())
			node := "any node not joined yet"
			if rec.Node != "" {
				node = "node " + rec.Node
			}
			if rec.Replace {
				node += ", replacing its certificate"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s: %d join(s), %s, valid until %s; on the edge node run: edgecore join --cloudcore-address <this host> --token <token>\n",
				rec.ID, rec.Uses, node, rec.Expires.Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().DurationVar(&opts.TTL, "ttl", pki.DefaultTokenTTL, "how long the token stays valid")
	create.Flags().IntVar(&opts.Uses, "uses", 1, "how many nodes may join with the token")
	create.Flags().StringVar(&opts.Node, "node", "", "bind the token to this node name (empty: any name not joined yet)")
	create.Flags().BoolVar(&opts.Replace, "replace", false, "let the token take over --node even while that node holds a valid certificate (re-installing it); the old certificate is revoked")

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List join tokens: ID, node, uses left, expiry, creation, state",
		Example: `  cloudcore token ls
  cloudcore token ls --ca-secret kedge-system/kedge-ca`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, recs, _, err := stores()
			if err != nil {
				return err
			}
			toks, err := pki.ListTokens(cmd.Context(), recs)
			if err != nil {
				return err
			}
			now := time.Now()
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNODE\tUSES LEFT\tEXPIRES\tCREATED\tSTATE\tJOINED")
			for _, r := range toks {
				node := r.Node
				if node == "" {
					node = "*"
				}
				if r.Replace {
					node += " (replace)"
				}
				joined := strings.Join(r.Joined, ",")
				if joined == "" {
					joined = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", r.ID, node, r.UsesLeft(), r.Uses,
					r.Expires.UTC().Format(time.RFC3339), r.Created.UTC().Format(time.RFC3339), r.State(now), joined)
			}
			return w.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:     "revoke ID...",
		Short:   "Revoke join tokens: joins with them are refused from now on",
		Example: `  cloudcore token revoke 3f9a2c1b0e4d`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			_, recs, _, err := stores()
			if err != nil {
				return err
			}
			for _, id := range ids {
				rec, err := pki.RevokeToken(cmd.Context(), recs, id, time.Now())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s (revoked at %s; it had %d of %d join(s) left)\n",
					rec.ID, rec.RevokedAt.Format(time.RFC3339), rec.UsesLeft(), rec.Uses)
			}
			return nil
		},
	}
	token.AddCommand(create, ls, revoke)
	return token
}
