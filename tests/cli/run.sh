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
