#!/usr/bin/env bash
# Black-box CLI checks: --check-config verdicts with file:line:col, --version, bad arguments.
# usage: run.sh SPLICED_BINARY FIXTURE_DIR
set -u
bin=$1
dir=$2
failed=0
passed=0
check() {  # description, command status (0 = ok)
    if [ "$2" -eq 0 ]; then echo "ok - $1"; passed=$((passed + 1)); else echo "not ok - $1"; failed=$((failed + 1)); fi
}
expect_refused() {  # fixture, expected "line:col: message fragment"
    local file="$dir/$1" out status
    out=$("$bin" --check-config --config "$file" 2>&1 >/dev/null)
    status=$?
    [ $status -ne 0 ] && [[ "$out" == "$file:$2"* ]]
    check "$1 refused with '$file:$2...' (got status $status: $out)" $?
}
"$bin" --check-config --config "$dir/good.yaml" >/dev/null 2>&1
check "good.yaml accepted" $?
expect_refused bad-unknown-key.yaml "4:5: unknown key 'backend' in route"
expect_refused bad-syntax.yaml "4:13: YAML syntax error"
expect_refused bad-address.yaml "5:18: backend address: bad address 'backend.local:9000'"
expect_refused bad-empty-backends.yaml "4:15: route 'web' has an empty backend list"
expect_refused bad-duration.yaml "1:16: drain_timeout: duration needs a unit"
expect_refused bad-not-yet.yaml "4:5: 'health_check' is not supported yet"
out=$("$bin" --check-config --config "$dir/missing.yaml" 2>&1 >/dev/null); status=$?
[ $status -ne 0 ] && [[ "$out" == "$dir/missing.yaml:0:0: cannot open config file"* ]]
check "missing file refused with its path" $?
out=$("$bin" --version); status=$?
[ $status -eq 0 ] && [[ "$out" =~ ^spliced\ [0-9]+\.[0-9]+\.[0-9]+ ]]
check "--version prints the version ($out)" $?
"$bin" --no-such-option >/dev/null 2>&1
[ $? -ne 0 ]
check "unknown option exits non-zero" $?
"$bin" >/dev/null 2>&1
[ $? -ne 0 ]
check "no --config exits non-zero" $?
out=$("$bin" --features 2>&1); status=$?
[ $status -eq 0 ] && [[ "$out" == *"sockmap:"* ]] && [[ "$out" == *"datapath auto chooses:"* ]]
check "--features reports the data paths" $?
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
