package sdk

import "context"

// Drainer is implemented by modules that hand work over before the host stops (SIGTERM): the host
// calls Drain on every module that has it, while all modules still run, before it stops any of them;
// ctx ends with the shutdown deadline. cloudhub's Drain lets its edge nodes go to other replicas.
type Drainer interface {
	Drain(ctx context.Context)
}
