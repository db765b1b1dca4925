#!/usr/bin/env bash
# A real local Kubernetes control plane (etcd v3.6.8, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl v1.36.3),
# built from the Go module proxy and run on loopback.
#
#   hack/controlplane.sh build   build the binaries into _bin/controlplane/<key>/ (skipped when present)
#   hack/controlplane.sh bindir  print that folder (builds first when missing)
#   hack/controlplane.sh up      start etcd + kube-apiserver (+ controller-manager, scheduler) under
#                                _run/controlplane/ (certificates, kubeconfig, PID files); waits for /readyz
#   hack/controlplane.sh down    stop them (apiserver first, then etcd)
#   hack/controlplane.sh env     print KUBECONFIG and PATH lines to eval
#
# The binaries are keyed by the nested modules' go.sum files and this script's build recipe, so a
# machine builds once (4-6 minutes cold on 2 cores) and reuses them until those change.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
RECIPE=2 # bump when the build flags below change

key() {
	cat "$ROOT/hack/controlplane/k8s/go.sum" "$ROOT/hack/controlplane/etcd/go.sum" \
		"$ROOT/hack/controlplane/k8s/go.mod" "$ROOT/hack/controlplane/etcd/go.mod" |
		sha256sum | cut -c1-16
	echo "$RECIPE"
}
BINDIR="$ROOT/_bin/controlplane/$(key | tr -d '\n')"
RUNDIR="${CONTROLPLANE_DIR:-$ROOT/_run/controlplane}"
ETCD_PORT="${CONTROLPLANE_ETCD_PORT:-2379}"
ETCD_PEER_PORT="${CONTROLPLANE_ETCD_PEER_PORT:-2380}"
API_PORT="${CONTROLPLANE_API_PORT:-6443}"

say() { printf '[controlplane] %s\n' "$*" >&2; }

build() {
	local bins=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler) missing=() b
	for b in "${bins[@]}"; do [[ -x "$BINDIR/$b" ]] || missing+=("$b"); done
	((${#missing[@]} == 0)) && return 0
	mkdir -p "$BINDIR"
	# One build at a time: a second caller (another test package, another checkout using this cache)
	# waits for the first instead of compiling Kubernetes again beside it.
	exec 9>"$BINDIR/.build.lock"
	if ! flock -n 9; then
		say "another build of ${BINDIR#$ROOT/} is running; waiting for it"
		flock 9
	fi
	missing=()
	for b in "${bins[@]}"; do [[ -x "$BINDIR/$b" ]] || missing+=("$b"); done
	((${#missing[@]} == 0)) && return 0
	local stamp="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=36"
	local t0=$SECONDS i=0
	say "building ${missing[*]} from the Go module proxy (etcd $ETCD_VERSION, Kubernetes $K8S_VERSION)"
	say "(a cold build takes 4-7 minutes on 2 cores; the result is cached in ${BINDIR#$ROOT/})"
	for b in "${missing[@]}"; do
		i=$((i + 1))
		say "$i/${#missing[@]} $b"
		if [[ $b == etcd ]]; then
			(cd "$ROOT/hack/controlplane/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BINDIR/$b.tmp" go.etcd.io/etcd/server/v3)
		else
			(cd "$ROOT/hack/controlplane/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$stamp" -o "$BINDIR/$b.tmp" "k8s.io/kubernetes/cmd/$b")
		fi
		mv "$BINDIR/$b.tmp" "$BINDIR/$b" # only a complete binary gets the name
		say "    done at $((SECONDS - t0)) s"
	done
	say "built in $((SECONDS - t0)) s"
}

pki() {
	local d="$RUNDIR/pki"
	[[ -f "$d/admin.crt" ]] && return 0
	mkdir -p "$d"
	say "generating CA, serving and admin certificates in ${d#$ROOT/}"
	(
		cd "$d"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
			-keyout ca.key -out ca.crt -subj "/CN=kedge-local-ca" 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout apiserver.key \
			-out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default\nextendedKeyUsage=serverAuth\n' >apiserver.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile apiserver.ext -out apiserver.crt 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout admin.key \
			-out admin.csr -subj "/O=system:masters/CN=kedge-admin" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >admin.ext
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile admin.ext -out admin.crt 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		rm -f ./*.csr ./*.ext
	)
}

# frontproxy: the requestheader client CA and the client certificate the kube-apiserver presents to
# aggregated APIs (metrics.k8s.io from cloudcore's cloudstream); made apart from pki so that an
# existing run directory gains them.
frontproxy() {
	local d="$RUNDIR/pki"
	[[ -f "$d/front-proxy-client.crt" ]] && return 0
	mkdir -p "$d"
	say "generating the front-proxy CA and client certificate (API aggregation) in ${d#$ROOT/}"
	(
		cd "$d"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
			-keyout front-proxy-ca.key -out front-proxy-ca.crt -subj "/CN=kedge-front-proxy-ca" 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout front-proxy-client.key \
			-out front-proxy-client.csr -subj "/CN=front-proxy-client" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >front-proxy-client.ext
		openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
			-days 3650 -extfile front-proxy-client.ext -out front-proxy-client.crt 2>/dev/null
		rm -f ./front-proxy-client.csr ./front-proxy-client.ext
	)
}

# kubeletclient: the client certificate the kube-apiserver presents to kubelets (logs, exec, attach,
# port-forward; for edge nodes: cloudcore's cloudstream), signed by the cluster CA as kubeadm does.
# cloudstream trusts it with clientCAFile=pki/ca.crt and clientAllowedNames=kube-apiserver-kubelet-client.
kubeletclient() {
	local d="$RUNDIR/pki"
	[[ -f "$d/kubelet-client.crt" ]] && return 0
	say "generating the kube-apiserver's kubelet client certificate in ${d#$ROOT/}"
	(
		cd "$d"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout kubelet-client.key \
			-out kubelet-client.csr -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >kubelet-client.ext
		openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile kubelet-client.ext -out kubelet-client.crt 2>/dev/null
		rm -f ./kubelet-client.csr ./kubelet-client.ext
	)
}

kubeconfig() {
	local d="$RUNDIR/pki"
	cat >"$RUNDIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kedge-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $d/ca.crt
users:
- name: kedge-admin
  user:
    client-certificate: $d/admin.crt
    client-key: $d/admin.key
contexts:
- name: kedge-local
  context: {cluster: kedge-local, user: kedge-admin}
current-context: kedge-local
EOF
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
	build
	mkdir -p "$RUNDIR"
	pki
	kubeconfig
	if alive "$RUNDIR/apiserver.pid"; then
		say "already running (kubeconfig: $RUNDIR/kubeconfig)"
		return 0
	fi
	if ! alive "$RUNDIR/etcd.pid"; then
		say "starting etcd on 127.0.0.1:$ETCD_PORT"
		"$BINDIR/etcd" --data-dir "$RUNDIR/etcd-data" --name kedge \
			--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
			--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
			--initial-cluster "kedge=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn \
			>"$RUNDIR/etcd.log" 2>&1 &
		echo $! >"$RUNDIR/etcd.pid"
	fi
	say "starting kube-apiserver on 127.0.0.1:$API_PORT"
	frontproxy
	kubeletclient
	local d="$RUNDIR/pki"
	"$BINDIR/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
		--tls-cert-file "$d/apiserver.crt" --tls-private-key-file "$d/apiserver.key" \
		--client-ca-file "$d/ca.crt" --authorization-mode RBAC \
		--service-account-key-file "$d/sa.pub" --service-account-signing-key-file "$d/sa.key" \
		--service-account-issuer https://kubernetes.default.svc \
		--service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
		--disable-admission-plugins ServiceAccount \
		--requestheader-client-ca-file "$d/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
		--requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
		--requestheader-username-headers X-Remote-User \
		--proxy-client-cert-file "$d/front-proxy-client.crt" --proxy-client-key-file "$d/front-proxy-client.key" \
		--kubelet-client-certificate "$d/kubelet-client.crt" --kubelet-client-key "$d/kubelet-client.key" \
		>"$RUNDIR/apiserver.log" 2>&1 &
	echo $! >"$RUNDIR/apiserver.pid"
	local i
	for i in $(seq 1 300); do
		if "$BINDIR/kubectl" --kubeconfig "$RUNDIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
			say "ready after $((i / 5)).$((i % 5 * 2)) s; export KUBECONFIG=$RUNDIR/kubeconfig"
			controllers
			return 0
		fi
		if ! alive "$RUNDIR/apiserver.pid"; then
			say "kube-apiserver exited; last lines of $RUNDIR/apiserver.log:"
			tail -20 "$RUNDIR/apiserver.log" >&2
			return 1
		fi
		sleep 0.2
	done
	say "kube-apiserver not ready after 60 s; see $RUNDIR/apiserver.log"
	return 1
}

# controllers runs kube-controller-manager (Deployments, ReplicaSets, service accounts, garbage
# collection, node lifecycle), so `kubectl apply` of a Deployment works as on a real cluster.
controllers() {
	alive "$RUNDIR/controller-manager.pid" && return 0
	local d="$RUNDIR/pki"
	say "starting kube-controller-manager"
	"$BINDIR/kube-controller-manager" --kubeconfig "$RUNDIR/kubeconfig" --authentication-kubeconfig "$RUNDIR/kubeconfig" \
		--authorization-kubeconfig "$RUNDIR/kubeconfig" --bind-address 127.0.0.1 --secure-port 0 \
		--leader-elect=false --service-account-private-key-file "$d/sa.key" --root-ca-file "$d/ca.crt" \
		--use-service-account-credentials=false --controllers '*' \
		>"$RUNDIR/controller-manager.log" 2>&1 &
	echo $! >"$RUNDIR/controller-manager.pid"
	if ! alive "$RUNDIR/scheduler.pid"; then
		say "starting kube-scheduler"
		"$BINDIR/kube-scheduler" --kubeconfig "$RUNDIR/kubeconfig" --authentication-kubeconfig "$RUNDIR/kubeconfig" \
			--authorization-kubeconfig "$RUNDIR/kubeconfig" --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
			>"$RUNDIR/scheduler.log" 2>&1 &
		echo $! >"$RUNDIR/scheduler.pid"
	fi
}

stop_pid() {
	local f="$1"
	if alive "$f"; then
		local p
		p="$(cat "$f")"
		kill "$p" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	stop_pid "$RUNDIR/scheduler.pid"
	stop_pid "$RUNDIR/controller-manager.pid"
	stop_pid "$RUNDIR/apiserver.pid"
	stop_pid "$RUNDIR/etcd.pid"
	say "stopped"
}

case "${1:-}" in
build) build ;;
bindir) build && echo "$BINDIR" ;;
up) up ;;
down) down ;;
env) echo "export KUBECONFIG=$RUNDIR/kubeconfig; export PATH=$BINDIR:\$PATH" ;;
*) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
