#!/usr/bin/env bash
# Black-box CLI checks: --check-config verdicts with file:line:col, --version, bad arguments.
# usage: run.sh SPLICED_BINARY FIXTURE_DIR
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 SPLICED_BINARY FIXTURE_DIR" >&2
    exit 2
fi
bin=$1
dir=$2
if [ ! -x "$bin" ]; then
    echo "not ok - $bin is not an executable"
    exit 1
fi
failed=0
passed=0

check() {  # description, status of the check (0 = ok)
    if [ "$2" -eq 0 ]; then
        echo "ok - $1"
        passed=$((passed + 1))
    else
        echo "not ok - $1"
        failed=$((failed + 1))
    fi
}

# A bad fixture must exit non-zero with stderr starting "<path as given>:<line>:<col>: <message fragment>".
expect_refused() {  # fixture, expected "line:col: message fragment"
    local file="$dir/$1" err status
    err=$("$bin" --check-config --config "$file" 2>&1 >/dev/null)
    status=$?
    [ $status -ne 0 ] && [[ "$err" == "$file:$2"* ]]
    check "$1 refused with '$file:$2...' (status $status, stderr: $err)" $?
}

err=$("$bin" --check-config --config "$dir/good.yaml" 2>&1 >/dev/null)
check "good.yaml accepted (stderr: $err)" $?

expect_refused bad-unknown-key.yaml "4:5: unknown key 'backend' in route"
expect_refused bad-syntax.yaml "4:13: YAML syntax error"
expect_refused bad-address.yaml "5:18: backend address: bad address '300.1.1.1:9000': '300.1.1.1' is not an IP address"
expect_refused bad-empty-backends.yaml "4:15: route 'web' has an empty backend list"
expect_refused bad-duration.yaml "1:16: drain_timeout: duration needs a unit"
expect_refused bad-health-check.yaml "4:5: health_check.timeout (2000 ms) must not be longer than its interval (1000 ms)"

err=$("$bin" --check-config --config "$dir/missing.yaml" 2>&1 >/dev/null)
status=$?
[ $status -ne 0 ] && [[ "$err" == "$dir/missing.yaml:0:0: cannot open config file"* ]]
check "missing file refused with its path (status $status, stderr: $err)" $?

# Input that is not a config, or too much of one: refused with a position, never a crash or a huge allocation.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# An AddressSanitizer build reserves terabytes of address space for its shadow: no address-space cap fits it.
asan=0
ldd "$bin" 2>/dev/null | grep -q libasan && asan=1
expect_refused_path() {  # path, expected "line:col: message fragment", description, [prlimit --as bytes]
    local err status
    if [ -n "${4:-}" ] && [ $asan -eq 1 ]; then
        echo "# $3: without the address-space cap (an AddressSanitizer build)"
        err=$("$bin" --check-config --config "$1" 2>&1 >/dev/null)
    elif [ -n "${4:-}" ]; then
        err=$(prlimit --as="$4" "$bin" --check-config --config "$1" 2>&1 >/dev/null)
    else
        err=$("$bin" --check-config --config "$1" 2>&1 >/dev/null)
    fi
    status=$?
    [ $status -eq 1 ] && [[ "$err" == "$1:$2"* ]]
    check "$3 refused with '$1:$2...' (status $status, stderr: ${err:0:200})" $?
}
expect_refused_path /dev/zero "0:0: cannot open config file: not a regular file" "/dev/zero" 2147483648
head -c $((50 << 20)) /dev/zero | tr '\0' '#' > "$scratch/50mb.yaml"
expect_refused_path "$scratch/50mb.yaml" "0:0: cannot open config file: larger than 32 MiB" "a 50 MB file" 2147483648
printf 'routes:\n  - na\0me: a\n' > "$scratch/nul.yaml"
expect_refused_path "$scratch/nul.yaml" "2:7: a NUL byte" "a NUL byte"
python3 -c "import sys; open(sys.argv[1], 'w').write('routes: [' + ','.join(['1'] * 4100000) + ']\n')" "$scratch/nodes.yaml"
expect_refused_path "$scratch/nodes.yaml" "1:8000004: the config has more than 4000000 YAML nodes" \
    "a 4.1M-node list (under a 2 GiB address space)" 2147483648
python3 -c "import sys; open(sys.argv[1], 'w').write('routes: [' + ','.join(['1'] * 2000000) + ']\n')" "$scratch/2m.yaml"
if [ $asan -eq 0 ]; then
    expect_refused_path "$scratch/2m.yaml" "0:0: out of memory while reading the config" \
        "a 2M-node list under a 128 MiB address space" 134217728
else
    echo "# skipped under AddressSanitizer: a 2M-node list under a 128 MiB address space (no cap fits its shadow)"
fi
minimal() {  # a config whose log.access_log is $1 (at line 2, column 15)
    printf 'log:\n  access_log: %s\nroutes:\n  - name: a\n    listen: 127.0.0.1:1\n    backends: [{ address: 127.0.0.1:2 }]\n' "$1"
}
minimal "$scratch/missing/access.log" > "$scratch/log.yaml"
expect_refused_path "$scratch/log.yaml" "2:15: log.access_log: cannot open '$scratch/missing/access.log': No such file" \
    "an access_log in a missing directory"
[ ! -e "$scratch/missing" ]
check "--check-config creates no directory for the access log" $?
minimal "$scratch/access.log" > "$scratch/log-ok.yaml"
"$bin" --check-config --config "$scratch/log-ok.yaml" >/dev/null 2>&1 && [ -f "$scratch/access.log" ]
check "--check-config opens (creates) an access_log it can write" $?

out=$("$bin" --version 2>/dev/null)
status=$?
[ $status -eq 0 ] && [[ "$out" =~ ^spliced\ [0-9]+\.[0-9]+\.[0-9]+ ]]
check "--version exits 0 and prints the version ($out)" $?

"$bin" --no-such-option >/dev/null 2>&1
[ $? -ne 0 ]
check "unknown option exits non-zero" $?

"$bin" >/dev/null 2>&1
[ $? -ne 0 ]
check "no --config exits non-zero" $?

out=$("$bin" --features 2>&1)
status=$?
[ $status -eq 0 ] && [[ "$out" == *"sockmap:"* ]] && [[ "$out" == *"datapath auto chooses:"* ]]
check "--features reports the data paths" $?

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
