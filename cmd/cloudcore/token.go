package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
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
		dir, secret, kubeconfig string
		ttl                     time.Duration
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a new join token (creating the CA first if there is none)",
		Long: `Print a join token for 'edgecore join'. The token is <sha256 of the CA certificate>.<JWT>:
the hash lets the edge node check it is talking to this cloudcore, the JWT (HS256, expiring after
--ttl) lets cloudcore check the node. Any number of nodes can join with one token until it expires.

If --pki-dir holds no CA yet, one is created there (and said so on stderr). Use the same directory
as cloudcore's cloudhub module, so the running cloudcore accepts the token. When cloudhub keeps the
CA in a Kubernetes Secret (modules.cloudhub.caSecret), pass that Secret as --ca-secret <ns>/<name>.`,
		Example: `  cloudcore token create
  cloudcore token create --ttl 1h --pki-dir /var/lib/kedge/pki
  cloudcore token create --ca-secret kedge-system/kedge-ca --kubeconfig ~/.kube/config
  # then, on each edge node:
  edgecore join --cloudcore-address cloud.example.com --token <the printed token>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 {
				return fmt.Errorf("--ttl %s: must be positive, e.g. 24h", ttl)
			}
			hub := cloudhub.New()
			hub.PKIDir = dir
			where := dir
			if secret != "" {
				ns, name, ok := strings.Cut(secret, "/")
				if !ok || ns == "" || name == "" {
					return fmt.Errorf("--ca-secret %q: want <namespace>/<name>", secret)
				}
				hub.CASecret = cloudhub.CASecret{Enable: true, Kubeconfig: kubeconfig, Namespace: ns, Name: name}
				where = "Secret " + secret
			}
			st, err := hub.CAStorage()
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
	create.Flags().StringVar(&secret, "ca-secret", "", "<namespace>/<name> of the Secret holding the CA, when cloudhub keeps it in Kubernetes (caSecret)")
	create.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for --ca-secret; empty: $KUBECONFIG, else in-cluster")
	create.Flags().DurationVar(&ttl, "ttl", pki.DefaultTokenTTL, "how long the token stays valid")
	token.AddCommand(create)
	return token
}
