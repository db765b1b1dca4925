package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/test/k8senv"
)

// runCloudcore executes cloudcore in-process with a fresh token command (cobra keeps flag values
// between runs of the same command object).
func runCloudcore(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	s := spec
	s.Commands = []*cobra.Command{tokenCommand()}
	cmd := daemon.Command(s)
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func TestTokenCreateMakesTheCAOnceAndPrintsVerifiableTokens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	stdout, stderr, err := runCloudcore(t, "token", "create", "--pki-dir", dir, "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "created a new CA in "+dir) {
		t.Errorf("stderr does not say the CA was created:\n%s", stderr)
	}
	if strings.Count(stdout, "\n") != 1 {
		t.Errorf("stdout is not exactly one line (the token):\n%s", stdout)
	}
	first, err := pki.ParseToken(stdout)
	if err != nil {
		t.Fatal(err)
	}
	ca, created, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: dir})
	if err != nil || created {
		t.Fatalf("CA not stored by the command (created %v, err %v)", created, err)
	}
	if first.CAHash != ca.Hash() {
		t.Errorf("token hash %s; want the stored CA's %s", first.CAHash, ca.Hash())
	}
	if err := ca.VerifyJWT(first.JWT); err != nil {
		t.Errorf("the printed token does not verify: %v", err)
	}

	stdout, stderr, err = runCloudcore(t, "token", "create", "--pki-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr, "created a new CA") {
		t.Error("a second run created another CA")
	}
	second, err := pki.ParseToken(stdout)
	if err != nil || second.CAHash != first.CAHash {
		t.Errorf("second token %+v (err %v); want the same CA hash", second, err)
	}
}

func TestTokenCreateRefusesBadInputWithExitCode2(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"zero ttl", []string{"token", "create", "--pki-dir", dir, "--ttl", "0s"}, "must be positive"},
		{"ttl not a duration", []string{"token", "create", "--pki-dir", dir, "--ttl", "tomorrow"}, "invalid argument"},
		{"damaged CA", []string{"token", "create", "--pki-dir", damagedPKI(t)}, "damaged"},
		{"zero uses", []string{"token", "create", "--pki-dir", dir, "--uses", "0"}, "at least 1"},
		{"replace without a node", []string{"token", "create", "--pki-dir", dir, "--replace"}, "--replace needs --node"},
		{"bad node name", []string{"token", "create", "--pki-dir", dir, "--node", "Edge_1"}, "DNS-1123"},
		{"revoke an unknown ID", []string{"token", "revoke", "--pki-dir", dir, "0123456789ab"}, "no token with ID"},
		{"revoke without an ID", []string{"token", "revoke", "--pki-dir", dir}, "requires at least 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := runCloudcore(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want it to mention %q", err, tt.want)
			}
			s := spec
			s.Commands = []*cobra.Command{tokenCommand()}
			if code := daemon.Main(s, tt.args); code != daemon.ExitConfig {
				t.Errorf("exit code %d; want %d", code, daemon.ExitConfig)
			}
		})
	}
}

func TestTokenLsShowsRecordsAndRevokeStopsATokenAtOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	_, stderr, err := runCloudcore(t, "token", "create", "--pki-dir", dir, "--node", "edge-1", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "1 join(s), node edge-1") {
		t.Errorf("create does not say what the token allows:\n%s", stderr)
	}
	if _, _, err := runCloudcore(t, "token", "create", "--pki-dir", dir, "--uses", "3"); err != nil {
		t.Fatal(err)
	}
	recs := pki.FileRecords{Dir: dir}
	toks, err := pki.ListTokens(context.Background(), recs)
	if err != nil || len(toks) != 2 {
		t.Fatalf("records %+v (err %v); want 2", toks, err)
	}
	out, _, err := runCloudcore(t, "token", "ls", "--pki-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "USES LEFT") {
		t.Fatalf("token ls:\n%s\nwant a header and two rows", out)
	}
	for _, r := range toks {
		row := ""
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, r.ID) {
				row = l
			}
		}
		want := []string{"*", "3/3", "valid"}
		if r.Node == "edge-1" {
			want = []string{"edge-1", "1/1", "valid"}
		}
		for _, w := range want {
			if !strings.Contains(row, w) {
				t.Errorf("row of token %s %q lacks %q", r.ID, row, w)
			}
		}
	}
	out, _, err = runCloudcore(t, "token", "revoke", "--pki-dir", dir, toks[0].ID)
	if err != nil || !strings.Contains(out, "revoked token "+toks[0].ID) {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	out, _, _ = runCloudcore(t, "token", "ls", "--pki-dir", dir)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, toks[0].ID) && !strings.Contains(l, "revoked") {
			t.Errorf("revoked token listed as %q", l)
		}
	}
}

func damagedPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := (pki.FileStorage{Dir: dir}).Write(context.Background(), pki.Item{Name: pki.CACertName, Data: []byte("garbage")}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTokenCreateHelpHasExamples(t *testing.T) {
	stdout, _, err := runCloudcore(t, "token", "create", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Examples:", "cloudcore token create --ttl", "--pki-dir", "edgecore join"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// With cloudhub's CA in a Kubernetes Secret, token create signs with that CA (the one every replica
// shares), not a CA on local disk.
func TestTokenCreateWithCASecretUsesTheCAInKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a control plane")
	}
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kedge-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pki")
	args := []string{"token", "create", "--pki-dir", dir, "--ca-secret", "kedge-system/kedge-ca", "--kubeconfig", env.Kubeconfig}
	first, stderr, err := runCloudcore(t, args...)
	if err != nil || !strings.Contains(stderr, "Secret kedge-system/kedge-ca") {
		t.Fatalf("first token: %v\n%s", err, stderr)
	}
	second, _, err := runCloudcore(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	st := kubestore.SecretStorage{Secrets: env.Client.CoreV1().Secrets("kedge-system"), Namespace: "kedge-system", Name: "kedge-ca"}
	ca, created, err := pki.LoadOrCreateCA(ctx, st)
	if err != nil || created {
		t.Fatalf("CA in the Secret: created=%v err=%v", created, err)
	}
	for _, tok := range []string{first, second} {
		if hash, _, _ := strings.Cut(strings.TrimSpace(tok), "."); hash != ca.Hash() {
			t.Fatalf("token hash %s, CA in the Secret %s", hash, ca.Hash())
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a CA was written to disk as well: %v", entries)
	}
	if _, _, err := runCloudcore(t, "token", "create", "--ca-secret", "no-slash"); err == nil || !strings.Contains(err.Error(), "<namespace>/<name>") {
		t.Fatalf("a malformed --ca-secret: %v", err)
	}
}
