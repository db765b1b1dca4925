package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestJoinStoresCredentialsTheHubAccepts(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	dir := filepath.Join(t.TempDir(), "certs")
	var progress bytes.Buffer
	res, err := Join(context.Background(), JoinOptions{
		CertServer: c.addr, Token: c.token(t).String(), NodeName: "edge-1", Dir: dir, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"fetched CA from https://" + c.addr + "/ca.crt", "CA hash matches token", "certificate issued for system:node:edge-1, valid until ", "wrote " + res.KeyFile, "wrote " + res.CertFile, "wrote " + res.CAFile} {
		if !strings.Contains(progress.String(), step) {
			t.Errorf("progress lacks %q:\n%s", step, progress.String())
		}
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("certs dir mode %v (err %v); want 0700", info.Mode().Perm(), err)
	}
	if info, err := os.Stat(res.KeyFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v (err %v); want 0600", info.Mode().Perm(), err)
	}
	caPEM, err := os.ReadFile(res.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caPEM, c.ca.CertPEM()) {
		t.Error("stored ca.crt is not the cloud's CA")
	}
	pair, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if node, err := handshake(t, c.ca, c.server, []tls.Certificate{pair}); err != nil || node != "edge-1" {
		t.Errorf("hub handshake with the joined certificate: node %q, err %v", node, err)
	}
	if got := c.count("edge.crt", "issued"); got != 1 {
		t.Errorf("issued counted %v times; want 1", got)
	}
}

func TestJoinRefusesACAWhoseHashIsNotTheTokens(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	impostor := newCloud(t, CertServerOptions{})
	dir := filepath.Join(t.TempDir(), "certs")
	_, err := Join(context.Background(), JoinOptions{CertServer: impostor.addr, Token: c.token(t).String(), NodeName: "edge-1", Dir: dir})
	if !errorContains(err, "CA hash mismatch") || !errorContains(err, c.ca.Hash()) || !errorContains(err, impostor.ca.Hash()) {
		t.Fatalf("err = %v; want a CA hash mismatch naming both hashes", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Error("files were written despite the mismatch")
	}
	if got := impostor.count("edge.crt", "issued") + impostor.count("edge.crt", "missing_token"); got != 0 {
		t.Error("the token was sent to a server whose CA did not match")
	}
}

func TestJoinReportsWhyItWasRefused(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	expired, err := testToken(t, c.ca.WithClock(newFakeClock(time.Now().Add(-48*time.Hour))), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := closed.Addr().String()
	closed.Close()
	tests := []struct {
		name, server, token, node, want string
	}{
		{"expired token", c.addr, expired.String(), "edge-1", "join token has expired"},
		{"forged token", c.addr, c.ca.Hash() + "." + newCloud(t, CertServerOptions{}).token(t).JWT, "edge-1", "not created by this cloudcore"},
		{"bad token format", c.addr, "abc", "edge-1", "dot-separated parts"},
		{"invalid node name", c.addr, c.token(t).String(), "Edge_1", "DNS-1123"},
		{"unreachable server", unreachable, c.token(t).String(), "edge-1", "is cloudcore running there"},
		{"address without port", "127.0.0.1", c.token(t).String(), "edge-1", "want host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Join(context.Background(), JoinOptions{CertServer: tt.server, Token: tt.token, NodeName: tt.node, Dir: t.TempDir()})
			if !errorContains(err, tt.want) {
				t.Fatalf("err = %v; want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestLoadKeyPairFinishesAnInterruptedReplacement(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	res := c.join(t, "edge-1")
	// Crash after the new certificate was written but before the new key was renamed into place.
	key := newKey(t)
	cert, err := c.ca.IssueNodeCert(key.Public(), "edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := encodeKey(key)
	if err := writeFileAtomic(res.KeyFile+".next", keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(res.CertFile, encodeCert(cert.Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := loadKeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(cert) {
		t.Error("loaded a certificate other than the new one")
	}
	if _, err := os.Stat(res.KeyFile + ".next"); !errors.Is(err, os.ErrNotExist) {
		t.Error("node.key.next was not moved into place")
	}
	if _, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile); err != nil {
		t.Errorf("files on disk still mismatch: %v", err)
	}
}
