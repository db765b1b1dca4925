package main

// The builtin modules compiled into cloudcore: the modules_<name>.go files are generated from
// cmd/modules.yaml (go generate ./cmd/edgecore), each behind the build tag kedge_<name>.
