// Command orphanhost loads one plugin module through the real module manager, prints the plugin's
// PID and waits to be killed: the orphan test SIGKILLs it and checks the plugin dies too.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
)

func main() {
	if err := run(os.Args[1], os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "orphanhost:", err)
		os.Exit(1)
	}
	select {}
}

func run(plugin, sum, dir string) error {
	db, err := store.Open(filepath.Join(dir, "kedge.db"), store.Options{})
	if err != nil {
		return err
	}
	tree := map[string]any{"modules": map[string]any{"echo": map[string]any{"runtime": "process", "path": plugin, "sha256": sum}}}
	plan, err := modules.Plan("orphanhost", tree, nil, nil, modules.Loaders{modules.Process: process.NewLoader(process.Options{})})
	if err != nil {
		return err
	}
	rt := router.New(nil)
	mgr := modules.NewManager(modules.Deps{NodeName: "orphan", Router: rt, Store: db,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err := mgr.Start(context.Background(), plan); err != nil {
		return err
	}
	reply, err := rt.SendSync(context.Background(), "echo", message.New("orphanhost", "test", "pid", "x"), 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", reply.Content)
	return nil
}
