package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/store"
)

// inspectCommand prints what the store holds; it works beside a running daemon (SQLite WAL readers
// do not block the writer) and on a stopped node, which is when operators need it most.
func inspectCommand(spec Spec) *cobra.Command {
	var (
		f      flags
		scope  string
		query  store.Query
		values bool
	)
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show the objects and the upstream outbox in the local store",
		Long: `inspect reads the SQLite store named by the config (store.path) and prints its objects — one
namespace (scope) at a time, by default metamanager's, which holds everything the node knows — and
how many upstream messages wait in the outbox. It is safe while ` + spec.Binary + ` runs.`,
		Example: "  " + spec.Binary + " inspect --type nodestatus --values\n  " + spec.Binary + " inspect --config /etc/kedge/" + spec.Binary + ".yaml --scope nodestatus",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := Load(spec, f.config, f.sets, os.Environ())
			if err != nil {
				return &exitError{ExitConfig, err}
			}
			path := cfg.base().Store.Path
			if _, err := os.Stat(path); err != nil {
				return &exitError{ExitFailure, fmt.Errorf("store %s: %w (is store.path right?)", path, err)}
			}
			db, err := store.Open(path, store.Options{Synchronous: cfg.base().Store.Synchronous})
			if err != nil {
				return &exitError{ExitFailure, err}
			}
			defer db.Close()
			return printStore(cmd.Context(), cmd.OutOrStdout(), db, scope, query, values)
		},
	}
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "config file naming the store (store.path)")
	cmd.Flags().StringArrayVar(&f.sets, "set", nil, "override one setting, as for run (e.g. --set store.path=/data/edgecore.db)")
	cmd.Flags().StringVar(&scope, "scope", "metamanager", "store namespace: a module's name")
	cmd.Flags().StringVar(&query.Type, "type", "", "only objects of this type (pod, configmap, nodestatus, ...)")
	cmd.Flags().StringVarP(&query.Namespace, "namespace", "n", "", "only objects in this namespace")
	cmd.Flags().StringVar(&query.NamePrefix, "prefix", "", "only objects whose name starts with this")
	cmd.Flags().BoolVar(&values, "values", false, "print each object's value too")
	return cmd
}

func printStore(ctx context.Context, w io.Writer, db *store.DB, scope string, q store.Query, values bool) error {
	objs, err := db.Objects(scope).List(ctx, q)
	if err != nil {
		return &exitError{ExitFailure, err}
	}
	pending, err := db.Outbox().Len(ctx)
	if err != nil {
		return &exitError{ExitFailure, err}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tNAMESPACE\tNAME\tRESOURCEVERSION\tBYTES\tUPDATED")
	for _, o := range objs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", o.Type, o.Namespace, o.Name, o.ResourceVersion, len(o.Value), o.UpdatedAt.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if values {
		for _, o := range objs {
			fmt.Fprintf(w, "\n%s:\n%s\n", o.Key, o.Value)
		}
	}
	fmt.Fprintf(w, "\n%d objects in scope %q; %d messages waiting in the upstream outbox\n", len(objs), scope, pending)
	return nil
}
