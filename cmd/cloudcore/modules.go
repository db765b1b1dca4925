package main

// The builtin modules compiled into cloudcore. Each file modules_<name>.go adds one, behind a build
// tag, as for edgecore.
