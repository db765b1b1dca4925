#!/usr/bin/env bash
# A real container runtime for tests and the demo: containerd (CRI) + runc + CNI, with its own config,
# root, state and socket under _run/containerd/, and local images built without a registry.
#
#   hack/containerd.sh install   apt-get install containerd, runc, CNI plugins, busybox-static (when missing)
#   hack/containerd.sh up        install if needed, start containerd, import localhost/busybox:local and
#                                localhost/pause:local; prints the CRI endpoint
#   hack/containerd.sh down      remove every pod sandbox, then stop containerd
#   hack/containerd.sh env       print CONTAINERD_ADDRESS=<socket> (eval it)
#   hack/containerd.sh image BINARY TAG
#                                turn a static binary into an image (e.g. _bin/edgecore localhost/edgecore:local)
#                                and import it
#
# Facts this relies on (see ../shared/ENVIRONMENT.md): no systemd here, so containerd runs as a child
# we track by PID; restrict_oom_score_adj (root lacks CAP_SYS_RESOURCE); PullImage can never succeed
# (no registry), so images are imported as docker-archives made by hack/mkimage.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${CONTAINERD_DIR:-$ROOT/_run/containerd}"
SOCK="$RUN/containerd.sock"
# A second containerd beside the first (a test that must not share one) names its own bridge and subnet.
BRIDGE="${CONTAINERD_BRIDGE:-kedge0}"
SUBNET="${CONTAINERD_SUBNET:-10.88.0.0/16}"
CNI_BIN=/usr/lib/cni

say() { printf '[containerd] %s\n' "$*" >&2; }

install() {
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[[ -x $CNI_BIN/bridge ]] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	[[ -x /bin/busybox ]] || missing+=(busybox-static)
	((${#missing[@]} == 0)) && return 0
	say "installing ${missing[*]} from Debian"
	local sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
		containerd runc containernetworking-plugins iptables busybox-static >/dev/null
}

config() {
	mkdir -p "$RUN/cni" "$RUN/cni-ipam"
	cat >"$RUN/config.toml" <<EOF
version = 2
root = "$RUN/root"
state = "$RUN/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:local"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$RUN/cni"
EOF
	cat >"$RUN/cni/10-kedge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kedge",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$RUN/cni-ipam", "ranges": [[{"subnet": "$SUBNET"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
EOF
}

alive() { [[ -f "$RUN/containerd.pid" ]] && kill -0 "$(cat "$RUN/containerd.pid")" 2>/dev/null; }

ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

images() {
	local have
	have="$(ctr_ images ls -q 2>/dev/null || true)"
	if ! grep -qx 'localhost/pause:local' <<<"$have"; then
		say "building and importing localhost/pause:local"
		(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$RUN/pause" ./hack/images/pause)
		(cd "$ROOT" && go run ./hack/mkimage --binary "$RUN/pause" --tag localhost/pause:local -o "$RUN/pause.tar")
		ctr_ images import "$RUN/pause.tar" >/dev/null
	fi
	if ! grep -qx 'localhost/busybox:local' <<<"$have"; then
		say "building and importing localhost/busybox:local (busybox-static)"
		local fs="$RUN/busybox-rootfs"
		rm -rf "$fs" && mkdir -p "$fs/bin" "$fs/etc" "$fs/tmp" "$fs/root" "$fs/var/www"
		chmod 1777 "$fs/tmp"
		cp /bin/busybox "$fs/bin/busybox"
		local applet
		for applet in $(/bin/busybox --list); do
			[[ $applet == busybox ]] || ln -s busybox "$fs/bin/$applet"
		done
		printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$fs/etc/passwd"
		printf 'root:x:0:\nnogroup:x:65534:\n' >"$fs/etc/group"
		(cd "$ROOT" && go run ./hack/mkimage --rootfs "$fs" --tag localhost/busybox:local --cmd sh -o "$RUN/busybox.tar")
		ctr_ images import "$RUN/busybox.tar" >/dev/null
	fi
}

up() {
	install
	mkdir -p "$RUN"
	config
	if ! alive; then
		say "starting containerd $(containerd --version | awk '{print $3}') (socket $SOCK)"
		containerd --config "$RUN/config.toml" >"$RUN/containerd.log" 2>&1 &
		echo $! >"$RUN/containerd.pid"
		local i
		for i in $(seq 1 100); do
			ctr -a "$SOCK" version >/dev/null 2>&1 && break
			if ! alive; then
				say "containerd exited; last lines of $RUN/containerd.log:"
				tail -20 "$RUN/containerd.log" >&2
				return 1
			fi
			sleep 0.1
		done
	fi
	images
	say "ready: CRI endpoint unix://$SOCK"
}

down() {
	if alive; then
		# Pods first: shims outlive containerd, and a sandbox's network namespace outlives its shim.
		local ids
		ids="$(ctr_ containers ls -q 2>/dev/null || true)"
		if [[ -n $ids ]]; then
			say "removing $(wc -l <<<"$ids") leftover containers"
			local id
			for id in $ids; do
				ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
			done
			sleep 0.3
			for id in $ids; do
				ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
				ctr_ containers delete "$id" >/dev/null 2>&1 || true
			done
		fi
		local p
		p="$(cat "$RUN/containerd.pid")"
		kill "$p" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
	fi
	rm -f "$RUN/containerd.pid"
	say "stopped"
}

image() {
	local bin="$1" tag="$2"
	[[ -f $bin ]] || { say "no such binary: $bin"; exit 2; }
	alive || up
	(cd "$ROOT" && go run ./hack/mkimage --binary "$bin" --tag "$tag" -o "$RUN/image.tar")
	ctr_ images import "$RUN/image.tar" >/dev/null
	say "imported $tag"
}

case "${1:-}" in
install) install ;;
up) up ;;
down) down ;;
env) echo "CONTAINERD_ADDRESS=$SOCK" ;;
image) shift; [[ $# -eq 2 ]] || { say "usage: hack/containerd.sh image BINARY TAG"; exit 2; }; image "$@" ;;
*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
