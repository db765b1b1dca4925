// Package crienv gives Go tests a real containerd over CRI: it runs hack/containerd.sh up once per
// test process (installing containerd, runc and the CNI plugins from Debian when missing, importing
// localhost/busybox:local and localhost/pause:local) and connects a CRI client to its socket.
//
// containerd keeps running after the tests (hack/test.sh stops it at the end; `hack/containerd.sh
// down` by hand). Tests must remove the sandboxes they create.
package crienv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Images every test may use.
const (
	Busybox = "localhost/busybox:local"
	Pause   = "localhost/pause:local"
)

var (
	once     sync.Once
	endpoint string
	startErr error
)

// Endpoint starts containerd when needed and returns its CRI endpoint (unix://<socket>).
func Endpoint() (string, error) {
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command(filepath.Join(root, "hack", "containerd.sh"), "up")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			startErr = fmt.Errorf("hack/containerd.sh up: %w", err)
			return
		}
		out, err := exec.Command(filepath.Join(root, "hack", "containerd.sh"), "env").Output()
		if err != nil {
			startErr = err
			return
		}
		endpoint = "unix://" + strings.TrimPrefix(strings.TrimSpace(string(out)), "CONTAINERD_ADDRESS=")
	})
	return endpoint, startErr
}

// Client is a CRI connection.
type Client struct {
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient
	conn    *grpc.ClientConn
}

// Start returns a CRI client to the test containerd (skipping the test with -short).
func Start(t testing.TB) (string, *Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs containerd (not with -short)")
	}
	ep, err := Endpoint()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return ep, c
}

// StartPrivate starts a containerd of the test's own (its folder, socket, CNI bridge and subnet) and
// stops it, with every pod it ran, when the test ends. For a node agent that treats every sandbox of
// its runtime as its own — an upstream kubelet stops pods it did not create — so it can never stop
// the pods of tests sharing the common containerd.
func StartPrivate(t testing.TB, bridge, subnet string) (string, *Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs containerd (not with -short)")
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "hack", "containerd.sh")
	dir, err := os.MkdirTemp("", "kedge-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CONTAINERD_DIR="+dir, "CONTAINERD_BRIDGE="+bridge, "CONTAINERD_SUBNET="+subnet)
	up := exec.Command(script, "up")
	up.Env, up.Stdout, up.Stderr = env, os.Stderr, os.Stderr
	t.Cleanup(func() {
		down := exec.Command(script, "down")
		down.Env, down.Stdout, down.Stderr = env, os.Stderr, os.Stderr
		if err := down.Run(); err != nil {
			t.Logf("stopping the private containerd in %s: %v", dir, err)
		}
		_ = os.RemoveAll(dir)
	})
	if err := up.Run(); err != nil {
		t.Fatalf("private containerd (hack/containerd.sh up in %s): %v", dir, err)
	}
	ep := "unix://" + filepath.Join(dir, "containerd.sock")
	c, err := Dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return ep, c
}

// Dial connects to a CRI endpoint (unix://path).
func Dial(ep string) (*Client, error) {
	conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	c := &Client{Runtime: runtimeapi.NewRuntimeServiceClient(conn), Images: runtimeapi.NewImageServiceClient(conn), conn: conn}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Runtime.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("CRI at %s: %w", ep, err)
	}
	return c, nil
}

func (c *Client) Close() error { return c.conn.Close() }

// RemoveSandboxes stops and removes every sandbox whose labels include all of match.
func (c *Client) RemoveSandboxes(ctx context.Context, match map[string]string) error {
	resp, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: match}})
	if err != nil {
		return err
	}
	for _, s := range resp.Items {
		_, _ = c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id})
		if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			return err
		}
	}
	return nil
}
