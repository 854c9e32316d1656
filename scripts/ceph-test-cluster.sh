#!/usr/bin/env bash
# A throwaway single-monitor Ceph cluster on loopback for simplemsgr's interop tests.
#
#   scripts/ceph-test-cluster.sh {install|start|stop|status|clean} [DIR]
#
# install  apt-get install ceph-mon + ceph-common if ceph-mon is missing (needs root)
# start    create (once) and start an auth-none mon in DIR (default ./.ceph-test) listening on
#          [v1:127.0.0.1:16789,v2:127.0.0.1:13300] (v1 first, so the ceph CLI speaks v1),
#          wait until `ceph -s` answers, print the v1 address
# stop     stop the mon started from DIR (pid file), bounded
# status   print whether it runs and its address
# clean    stop, then remove DIR (only if this script created it)
#
# Environment: CEPH_TEST_V1_PORT (16789), CEPH_TEST_V2_PORT (13300), CEPH_TEST_START_TIMEOUT (20 s).
# Everything (monmap, mon data, logs, asok, pid) stays inside DIR.
set -euo pipefail

CMD=${1:-}
DIR=${2:-./.ceph-test}
V1_PORT=${CEPH_TEST_V1_PORT:-16789}
V2_PORT=${CEPH_TEST_V2_PORT:-13300}
START_TIMEOUT=${CEPH_TEST_START_TIMEOUT:-20}
V1_ADDR="v1:127.0.0.1:${V1_PORT}"
MARKER=".simplemsgr-ceph-test"

die() { echo "ceph-test-cluster: error: $*" >&2; exit 1; }
log() { echo "ceph-test-cluster: $*" >&2; }

abs_dir() { mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd); }

do_install() {
    if command -v ceph-mon >/dev/null 2>&1 && command -v ceph >/dev/null 2>&1 && command -v monmaptool >/dev/null 2>&1; then
        log "ceph-mon already installed ($(ceph-mon --version 2>/dev/null | head -1))"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "ceph-mon is missing and apt-get is not available; install ceph-mon and ceph-common by hand"
    [ "$(id -u)" = 0 ] || die "ceph-mon is missing; installing it needs root (run: sudo $0 install)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show ceph-mon >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q >/dev/null || die "apt-get update failed"
    fi
    log "apt-get install ceph-mon ceph-common"
    if ! apt-get install -y -q --no-install-recommends ceph-mon ceph-common >/dev/null; then
        log "install failed; retrying after apt-get update"
        apt-get update -q >/dev/null || die "apt-get update failed"
        apt-get install -y -q --no-install-recommends ceph-mon ceph-common >/dev/null \
            || die "apt-get install ceph-mon ceph-common failed"
    fi
    command -v ceph-mon >/dev/null 2>&1 || die "ceph-mon still missing after install"
    log "installed $(ceph-mon --version | head -1)"
}

pid_of() {
    local f="$DIR/run/mon.a.pid"
    [ -f "$f" ] || return 1
    local pid
    pid=$(cat "$f" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

write_conf() {
    cat > "$DIR/ceph.conf" <<CONF
[global]
fsid = $1
mon_host = [${V1_ADDR},v2:127.0.0.1:${V2_PORT}]
mon_initial_members = a
ms_bind_msgr1 = true
ms_bind_msgr2 = true
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
mon_data_avail_warn = 1
mon_data_avail_crit = 0
mon_warn_on_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_allow_pool_size_one = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_warn_on_pool_no_redundancy = false
run_dir = $DIR/run
crash_dir = $DIR/crash
log_to_stderr = false
err_to_stderr = false

[mon]
mon_data = $DIR/mon/ceph-a
log_file = $DIR/log/mon.a.log
admin_socket = $DIR/run/mon.a.asok
pid_file = $DIR/run/mon.a.pid
mon_cluster_log_file = $DIR/log/cluster.log

[client]
log_file = /dev/null
admin_socket =
CONF
}

ceph_cli() { timeout 10 ceph -c "$DIR/ceph.conf" --connect-timeout 5 "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

do_start() {
    command -v ceph-mon >/dev/null 2>&1 || die "ceph-mon is not installed (run: $0 install)"
    if [ -e "$DIR" ] && [ ! -e "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        die "$DIR exists, is not empty and was not created by this script; refusing to touch it"
    fi
    abs_dir
    if pid=$(pid_of); then
        log "already running (pid $pid)"
        echo "$V1_ADDR"
        return 0
    fi
    for p in "$V1_PORT" "$V2_PORT"; do
        port_busy "$p" && die "port 127.0.0.1:$p is already in use by another process"
    done
    touch "$DIR/$MARKER"
    mkdir -p "$DIR/run" "$DIR/log" "$DIR/mon" "$DIR/crash"
    if [ ! -f "$DIR/mon/ceph-a/done" ] && [ ! -f "$DIR/mon/ceph-a/kv_backend" ]; then
        local fsid
        fsid=$(cat /proc/sys/kernel/random/uuid)
        write_conf "$fsid"
        rm -rf "$DIR/mon/ceph-a" "$DIR/monmap"
        monmaptool --create --addv a "[${V1_ADDR},v2:127.0.0.1:${V2_PORT}]" --fsid "$fsid" "$DIR/monmap" >/dev/null \
            || die "monmaptool failed"
        ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" >"$DIR/log/mkfs.log" 2>&1 \
            || die "ceph-mon --mkfs failed; see $DIR/log/mkfs.log"
        echo "$fsid" > "$DIR/fsid"
    fi
    ceph-mon -c "$DIR/ceph.conf" -i a >"$DIR/log/start.log" 2>&1 || die "ceph-mon failed to start; see $DIR/log/start.log and $DIR/log/mon.a.log"
    local deadline=$((SECONDS + START_TIMEOUT))
    until ceph_cli -s >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "the monitor did not answer 'ceph -s' within ${START_TIMEOUT}s; see $DIR/log/mon.a.log"
        fi
        pid_of >/dev/null || [ "$SECONDS" -lt 2 ] || die "ceph-mon exited; see $DIR/log/mon.a.log"
        sleep 0.1
    done
    log "running (pid $(pid_of || echo ?)), fsid $(cat "$DIR/fsid")"
    echo "$V1_ADDR"
}

do_stop() {
    [ -d "$DIR" ] || { log "not running (no $DIR)"; return 0; }
    abs_dir
    local pid
    if ! pid=$(pid_of); then
        log "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { log "stopped (pid $pid)"; rm -f "$DIR/run/mon.a.pid"; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/run/mon.a.pid"
}

do_status() {
    [ -d "$DIR" ] || { echo "stopped"; return 3; }
    abs_dir
    if pid=$(pid_of); then
        echo "running pid=$pid addr=$V1_ADDR fsid=$(cat "$DIR/fsid" 2>/dev/null)"
    else
        echo "stopped"
        return 3
    fi
}

do_clean() {
    [ -e "$DIR" ] || return 0
    [ -e "$DIR/$MARKER" ] || die "$DIR was not created by this script; refusing to remove it"
    do_stop
    rm -rf "$DIR"
    log "removed $DIR"
}

case "$CMD" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    clean) do_clean ;;
    *) echo "usage: $0 {install|start|stop|status|clean} [DIR]" >&2; exit 2 ;;
esac
