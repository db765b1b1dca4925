package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/pki"
)

func init() { spec.Commands = append(spec.Commands, tokenCommand()) }

// tokenCommand is "cloudcore token": join tokens for edge nodes.
func tokenCommand() *cobra.Command {
	token := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens for edge nodes",
		Args:  cobra.NoArgs,
	}
	var (
		dir string
		ttl time.Duration
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a new join token (creating the CA first if there is none)",
		Long: `Print a join token for 'edgecore join'. The token is <sha256 of the CA certificate>.<JWT>:
the hash lets the edge node check it is talking to this cloudcore, the JWT (HS256, expiring after
--ttl) lets cloudcore check the node. Any number of nodes can join with one token until it expires.

If --pki-dir holds no CA yet, one is created there (and said so on stderr). Use the same directory
as cloudcore's cloudhub module, so the running cloudcore accepts the token.`,
		Example: `  cloudcore token create
  cloudcore token create --ttl 1h --pki-dir /var/lib/kedge/pki
  # then, on each edge node:
  edgecore join --cloudcore-address cloud.example.com --token <the printed token>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 {
				return fmt.Errorf("--ttl %s: must be positive, e.g. 24h", ttl)
			}
			ca, created, err := pki.LoadOrCreateCA(cmd.Context(), pki.FileStorage{Dir: dir})
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(cmd.ErrOrStderr(), "created a new CA in %s (sha256 %s)\n", dir, ca.Hash())
			}
			tok, err := ca.CreateToken(ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.String())
			fmt.Fprintf(cmd.ErrOrStderr(), "token valid until %s; on each edge node run: edgecore join --cloudcore-address <this host> --token <token>\n",
				time.Now().Add(ttl).UTC().Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&dir, "pki-dir", pki.DefaultCloudDir, "directory holding the CA (ca.crt, ca.key, token.secret); created with mode 0700 if missing")
	create.Flags().DurationVar(&ttl, "ttl", pki.DefaultTokenTTL, "how long the token stays valid")
	token.AddCommand(create)
	return token
}
