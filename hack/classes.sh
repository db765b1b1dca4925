#!/usr/bin/env bash
# make classes: build the stripped linux/amd64 release edgecore of every device class (hack/classes.mk,
# generated from cmd/modules.yaml), start each with its default config (state in a temp folder) and
# measure: binary size, cold start to /readyz, idle RSS (total and anonymous, read 2 s after ready),
# idle CPU (ms of CPU per second over IDLE_SECONDS) and wake-ups (voluntary context switches of all its
# threads per second), and the idle working set: VmRSS once the kernel was told to reclaim the
# executable's pages (process_madvise MADV_PAGEOUT; on this machine the whole binary is resident right
# after start) and the process idled IDLE_SECONDS more and answered one /metrics scrape.
# Then, unless FOOTPRINT=0, the full class beside upstream KubeEdge v1.23.1's edgecore with 20 pods each
# on one control plane and containerd (test/e2e TestFootprint...; needs KUBEBUILDER_ASSETS, the
# containerd of hack/containerd.sh and ../shared/kubeedge or KEDGE_KUBEEDGE_DIR).
# Prints the tables and records them in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECONDS=${IDLE_SECONDS:-10}
classes=$(sed -n 's/^CLASSES := //p' hack/classes.mk)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
now_ms() { date +%s%3N; }
# CPU time in µs of all the process's threads (schedstat: ns on a CPU), finer than the 10 ms of /proc/PID/stat.
cpu_us() { cat /proc/$1/task/*/schedstat 2>/dev/null | awk '{n += $1} END {printf "%d", n / 1000}'; }
wakeups() { cat /proc/$1/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'; }
# pageout PID: reclaim the pages of the process's executable (its read-only file mappings).
pageout() {
  python3 - "$1" <<'PY'
import ctypes, os, sys
pid = int(sys.argv[1]); libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure): _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
fd = libc.syscall(434, pid, 0)  # pidfd_open
if fd < 0: sys.exit("pidfd_open: " + os.strerror(ctypes.get_errno()))
exe = os.readlink("/proc/%d/exe" % pid)
for line in open("/proc/%d/maps" % pid):
    f = line.split()
    if len(f) < 6 or f[5] != exe or "w" in f[1]: continue
    a, b = (int(x, 16) for x in f[0].split("-"))
    if libc.syscall(440, fd, ctypes.byref(iovec(a, b - a)), 1, 21, 0) < 0:  # process_madvise MADV_PAGEOUT
        sys.exit("process_madvise: " + os.strerror(ctypes.get_errno()))
PY
}
rows=""
for class in $classes; do
  make -s --no-print-directory release-edgecore-$class-amd64 >/dev/null
  bin=_bin/release/edgecore-$class-amd64
  sync "$bin" # a freshly written binary's pages are dirty: MADV_PAGEOUT below could not reclaim them
  size=$(stat -c %s "$bin")
  port=$((10390 + RANDOM % 100))
  mods=$("$bin" version | awk '/module/ {print $2}' | paste -sd, -)
  # Free ports for what listens by default (the MetaServer, the embedded MQTT broker), where present.
  extra=(KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:0)
  [[ ,$mods, == *,eventbus,* ]] && extra+=(KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:0)
  [[ ,$mods, == *,dmi,* ]] && extra+=(KEDGE_MODULES__DMI__SOCKET="$tmp/$class-dmi.sock")
  t0=$(now_ms)
  env KEDGE_STORE__PATH="$tmp/$class.db" KEDGE_ADMIN__ADDRESS=127.0.0.1:$port KEDGE_ADMIN__SOCKET="$tmp/$class.sock" "${extra[@]}" \
    "$bin" >"$tmp/$class.log" 2>&1 &
  pid=$!
  ready=""
  for _ in $(seq 3000); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=$(( $(now_ms) - t0 )); break; fi
    kill -0 $pid 2>/dev/null || { echo "edgecore-$class exited:"; cat "$tmp/$class.log"; exit 1; }
    sleep 0.01
  done
  [[ -n $ready ]] || { echo "edgecore-$class not ready in 30 s:"; cat "$tmp/$class.log"; kill $pid; exit 1; }
  sleep 2 # settle: first reports written, GC done
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  anon=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status)
  c0=$(cpu_us $pid); w0=$(wakeups $pid); sleep "$IDLE_SECONDS"; c1=$(cpu_us $pid); w1=$(wakeups $pid)
  cpu=$(awk -v d=$((c1 - c0)) -v s="$IDLE_SECONDS" 'BEGIN { printf "%.2f", d / 1000 / s }')
  wake=$(awk -v d=$((w1 - w0)) -v s="$IDLE_SECONDS" 'BEGIN { printf "%.1f", d / s }')
  pageout $pid; sleep "$IDLE_SECONDS"; curl -fsS "http://127.0.0.1:$port/metrics" >/dev/null
  ws=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  rows+=$(awk -v c="$class" -v m="$mods" -v s="$size" -v r="$rss" -v a="$anon" -v t="$ready" -v u="$cpu" -v w="$wake" -v ws="$ws" \
    'BEGIN { printf "| %s | %s | %.1f MiB | %d ms | %.1f MiB | %.1f MiB | %.1f MiB | %s ms/s | %s |", c, m, s/1048576, t, r/1024, a/1024, ws/1024, u, w }')$'\n'
  echo "==> $class: $((size / 1024)) KiB, ready in $ready ms, idle RSS $rss KiB ($anon KiB anonymous), after reclaim $ws KiB, idle CPU $cpu ms/s, $wake wake-ups/s"
done
table="| class | builtin modules | stripped binary | cold start to /readyz | idle RSS | of it anonymous | idle working set | idle CPU | wake-ups/s |"$'\n'"|---|---|---|---|---|---|---|---|---|"$'\n'"$rows"
printf '\n%s' "$table"
load=$(cut -d' ' -f1-3 /proc/loadavg)
section="Generated by \`make classes\` on $(date -u +%F) — $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load average $load at the end, $(go version | awk '{print $3}'), Linux $(uname -r). Each class is \`make release-edgecore-<class>-amd64\` (static, -s -w, -trimpath), started with its defaults and no cloud; RSS read 2 s after /readyz; idle CPU and wake-ups (voluntary context switches of all threads) over ${IDLE_SECONDS} s (the CPU is shared with other work, so read idle CPU as an upper bound); idle working set = VmRSS after the kernel was told to reclaim the executable's pages (process_madvise MADV_PAGEOUT) and ${IDLE_SECONDS} s more idle with one /metrics scrape."$'\n\n'"$table"
# The full class beside upstream KubeEdge's edgecore, 20 pods each (test/e2e, a few minutes).
if [[ ${FOOTPRINT:-1} != 0 ]]; then
  out=$tmp/footprint.jsonl
  FOOTPRINT_EDGECORE=$PWD/_bin/release/edgecore-full-amd64 FOOTPRINT_OUT=$out FOOTPRINT_IDLE=${IDLE_SECONDS}s \
    go test -count=1 -timeout 30m -run TestFootprintOfKedgeAndUpstreamEdgecoreWith20PodsEachOnOneControlPlane -v ./test/e2e/ | grep -E "footprint_test|^(ok|FAIL|---)" || true
  if [[ -s $out ]]; then
    frows=$(python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
m = lambda k: k / 1024
for r in rows:
    print("| %s | %d | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %d | %.2f ms/s | %.0f |" % (r["who"], r["pods"], m(r["rssKiB"]), m(r["anonKiB"]), m(r["fileKiB"]), m(r["workingSetKiB"]), r["threads"], r["cpuMsPerS"], r["wakeupsPerS"]))
up, ke = rows[0], rows[1]
print("| **Kedge / upstream** | | **%.2f×** | %.2f× | | %.2f× | | %.2f× | %.2f× |" % (ke["rssKiB"] / up["rssKiB"], ke["anonKiB"] / up["anonKiB"], ke["workingSetKiB"] / up["workingSetKiB"], ke["cpuMsPerS"] / max(up["cpuMsPerS"], 0.01), ke["wakeupsPerS"] / max(up["wakeupsPerS"], 0.01)))
PY
)
    ftable="| edgecore | pods | RSS | anonymous | file | working set | threads | idle CPU | wake-ups/s |"$'\n'"|---|---|---|---|---|---|---|---|---|"$'\n'"$frows"
    printf '\n%s\n' "$ftable"
    section+=$'\n'"Side by side with upstream (\`FOOTPRINT=1\`, the default; test/e2e TestFootprintOfKedgeAndUpstreamEdgecoreWith20PodsEachOnOneControlPlane): KubeEdge v1.23.1's edgecore and the full class's release build join one Kedge cloudcore on one kube-apiserver, 20 busybox pods each (upstream on a containerd of its own, Kedge on hack/containerd.sh's); read once all 40 run and RSS settled; CPU, wake-ups and the working set as above, both processes over the same window."$'\n\n'"$ftable"$'\n'
  else
    echo "footprint: no result (see the test output above)" >&2
  fi
fi
python3 - "$section" <<'PY'
import sys, re
p = "BENCHMARKS.md"
s = open(p).read()
start, end = "<!-- classes:start -->", "<!-- classes:end -->"
block = start + "\n" + sys.argv[1] + end
if start in s:
    s = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: block, s, flags=re.S)
else:
    s += "\n## Device classes (edgecore builds)\n\n" + block + "\n"
open(p, "w").write(s)
PY
echo "updated BENCHMARKS.md"
