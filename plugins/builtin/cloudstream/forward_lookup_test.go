package cloudstream

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
)

func TestNodeLeaseNamesAreCloudhubsOwnershipLeaseNames(t *testing.T) {
	for _, n := range []string{"edge-a", strings.Repeat("n", 242), strings.Repeat("n", 243), strings.Repeat("x.y", 100)} {
		if got, want := nodeLeaseName(n), cloudhub.NodeLeaseName(n); got != want {
			t.Fatalf("node %q: %q, cloudhub writes %q", n, got, want)
		}
	}
	if got, want := replicaLeaseName("r1"), cloudhub.ReplicaLeaseName("r1"); got != want {
		t.Fatalf("%q, cloudhub writes %q", got, want)
	}
}
