#!/usr/bin/env bash
# Run ALL of simplemsgr's tests, as CI does (`.ci/run` calls this script).
#
#   scripts/test-all.sh
#
# 1. formatting, lints and docs (cargo fmt --check, cargo clippy -D warnings, cargo doc
#    with warnings as errors);
# 2. installs (if missing) and starts a throwaway single-monitor Ceph cluster on
#    loopback for the v1 interop tests (scripts/ceph-test-cluster.sh; needs root the
#    first time, for apt-get);
# 3. cargo test: unit tests, deterministic protocol tests, loopback integration tests,
#    the security suite, interop against the real ceph-mon and the ceph CLI, and the
#    bounded stable fuzz smoke run;
# 4. stops the monitor again, whatever happened.
#
# Every long test is bounded inside the test itself; the whole run takes a few minutes
# on 2 cores. A failure to install or start ceph-mon fails the run with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

MON_DIR="$PWD/target/ceph-test-mon"
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -q -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -q

step "ceph-mon for the v1 interop tests"
scripts/ceph-test-cluster.sh install
trap 'scripts/ceph-test-cluster.sh stop "$MON_DIR" >/dev/null 2>&1 || true' EXIT
MON_ADDR=$(scripts/ceph-test-cluster.sh start "$MON_DIR" | tail -1)
export SIMPLEMSGR_CEPH_MON="$MON_ADDR"
echo "monitor at $SIMPLEMSGR_CEPH_MON"

step "cargo test (all targets)"
cargo test --all-targets --no-fail-fast 2>&1 | tee target/test-all.log
status=${PIPESTATUS[0]}

step "doc tests"
cargo test --doc -q

passed=$(grep -Eo '^test result: [a-z]+\. [0-9]+ passed' target/test-all.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-all.log | awk '{s+=$1} END {print s+0}')
echo
echo "all tests: ${passed} passed, ${failed} failed"
exit "$status"
