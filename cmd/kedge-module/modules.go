package main

// The builtin modules this command can serve: the modules_<name>.go files are generated from
// cmd/modules.yaml (every module with runtime process; go generate ./cmd/edgecore), behind the same
// build tag as in cmd/edgecore, so `-tags "kedge_custom kedge_<name>"` links that module alone.
