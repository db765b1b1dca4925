package main

// The builtin modules compiled into edgecore: the modules_<name>.go files are generated from the one
// module list, cmd/modules.yaml (for cmd/cloudcore and cmd/kedge-module too); each sits behind the
// build tag kedge_<name>, so an image can be trimmed per device class (make edgecore-<class>).
//go:generate go run ../../hack/modgen -root ../..
