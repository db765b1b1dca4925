// Package kube re-exports sdk/kube (REST config and leader election for cloud modules), which modules
// import: the module contract and its helpers live in sdk/ and depend on nothing in host/.
package kube

import (
	"context"

	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/sdk/kube"
)

type (
	Elector        = kube.Elector
	ElectorOptions = kube.ElectorOptions
	LeaderElection = kube.LeaderElection
)

func RestConfig(path, setting string) (*rest.Config, error) { return kube.RestConfig(path, setting) }
func StartElector(ctx context.Context, c LeaderElection, o ElectorOptions) (*Elector, error) {
	return kube.StartElector(ctx, c, o)
}
func DefaultLeaderElection() LeaderElection { return kube.DefaultLeaderElection() }
