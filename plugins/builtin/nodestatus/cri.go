//go:build !kedge_nocri

package nodestatus

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The CRI client links k8s.io/cri-api; a build with the tag kedge_nocri (the feature cri left out in
// cmd/modules.yaml) has none and refuses criEndpoint by name.
func init() {
	dialCRI = func(endpoint string) (criClient, error) {
		conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return grpcCRI{conn: conn, rt: criv1.NewRuntimeServiceClient(conn)}, nil
	}
}

type grpcCRI struct {
	conn *grpc.ClientConn
	rt   criv1.RuntimeServiceClient
}

func (c grpcCRI) Version(ctx context.Context) (string, string, error) {
	v, err := c.rt.Version(ctx, &criv1.VersionRequest{})
	if err != nil {
		return "", "", err
	}
	return v.RuntimeName, v.RuntimeVersion, nil
}

func (c grpcCRI) Close() error { return c.conn.Close() }
