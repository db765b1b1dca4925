package main

// The builtin modules compiled into edgecore. Each file modules_<name>.go adds one, behind a build tag
// (see the Makefile's edgecore-% targets) so an image can be trimmed per device class.
