package edged

import criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

// SetRuntimeWrapper makes edged modules started from now on use f(client) as their CRI runtime
// client (nil: the plain client). For tests that count CRI calls.
func SetRuntimeWrapper(f func(criv1.RuntimeServiceClient) criv1.RuntimeServiceClient) {
	wrapRuntime = f
}
