#!/bin/bash
# Runs inside the test guest (see tests/kernels/run), as root, on the host's root filesystem (read-only) with
# the guest kernel. Usage: guest.sh BUILD_DIR SET REPEAT DATAPATH... Writes to /run/out (the host's output dir):
# console.txt is not ours; results.txt has one line per step, "RESULT <name> <exit code> <seconds>", and each
# step's output is in <name>.log. The host side decides what the results mean.
set -u
build=$1 set=$2 repeat=$3
shift 3
paths=${*:-sockmap splice copy auto}
out=/run/out
: > "$out/results.txt"
ip link set lo up
ulimit -n 1048576
echo "guest: $(uname -r), $(nproc) CPUs, RLIMIT_NOFILE $(ulimit -n), set $set"
uname -r > "$out/kernel-release"

step() {  # step NAME TIMEOUT CMD...: runs CMD with its output in NAME.log, records the result
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "guest: step $name: $*"
  timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "RESULT $name $rc $((SECONDS - t0))" | tee -a "$out/results.txt"
}

step features 60 "$build/spliced" --features

# What the daemon says at startup for an auto route and a forced sockmap route (its probe, its choice, the warning).
startup() {  # startup NAME DATAPATH
  local d; d=$(mktemp -d)
  cat > "$d/spliced.yaml" <<YAML
datapath: $2
workers: 1
log: { level: info, access_log: off }
routes:
  - name: r_$2
    listen: ["127.0.0.1:18080"]
    backends:
      - address: 127.0.0.1:18081
YAML
  "$build/spliced" --config "$d/spliced.yaml" > "$out/$1.log" 2>&1 &
  local pid=$! i
  for i in $(seq 1 100); do grep -q 'route r_' "$out/$1.log" && break; sleep 0.1; done
  kill -TERM "$pid"; wait "$pid"
  echo "RESULT $1 $? 0" | tee -a "$out/results.txt"
  rm -rf "$d"
}
startup startup_auto auto
startup startup_sockmap sockmap

# Quick: every case but the two slowest under TCG: integrity both ways (0 B, 1 B, 64 KiB, 64 MiB with
# half-close), early and banner traffic, refused / black-holed / failing-over / resetting backends, idle
# timeout, IPv6, promotion on auto, PROXY protocol, SNI, and the end-state check. Left out: 500 concurrent
# connections x 256 KiB (~75 s per path under TCG) and the 10 s slow reader. Full: every case.
case $set in
  quick) filter='[transfer],[early],[banner],[errors],[idle],[ipv6],[promotion],[proxy_protocol],[sni],[end]' ;;
  full) filter= ;;
  *) echo "unknown set $set"; exit 2 ;;
esac

if grep -q 'sockmap: usable\|sockmap works but' "$out/features.log"; then
  for r in $(seq 1 "$repeat"); do
    step "facts_$r" 600 "$build/tests/sockmap_facts_tests"
  done
else
  echo "RESULT facts_1 77 0" | tee -a "$out/results.txt"
fi

for r in $(seq 1 "$repeat"); do
  for p in $paths; do
    step "integration_${p}_$r" 1200 env SPLICED_BINARY="$build/spliced" SPLICED_TEST_DATAPATH="$p" \
      "$build/tests/integration_tests" --durations yes ${filter:+"$filter"}
  done
done

dmesg > "$out/dmesg.txt"
echo "guest: done"
