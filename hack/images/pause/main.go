// Command pause is the sandbox ("pause") image's process: it holds a pod's namespaces open and exits
// cleanly on SIGTERM or SIGINT. Static, a few hundred KiB; built by hack/containerd.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
