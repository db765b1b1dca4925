package main

// The builtin modules this command can serve. Each file modules_<name>.go adds one behind the same
// build tag as cmd/edgecore uses, so `-tags "kedge_custom kedge_<name>"` links that module alone.
