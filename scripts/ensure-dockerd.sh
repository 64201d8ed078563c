#!/usr/bin/env bash
# Make sure a Docker daemon answers on this machine; idempotent.
# Installs docker.io when dockerd is missing, starts dockerd in the background when
# `docker info` fails (no systemd as PID 1 here), waits at most 60 s, prints one line.
# Only the dockerd this script started is recorded (pid file), so stop-dockerd.sh
# never touches a daemon someone else runs.
set -euo pipefail

LOG=/var/log/pyflannel-dockerd.log
PIDFILE=/run/pyflannel-dockerd.pid
WAIT_SECONDS=60

die() { echo "ensure-dockerd: $*" >&2; exit 1; }

# A docker CLI may exist without the daemon (e.g. a static client in /usr/local/bin).
install_docker() {
    command -v dockerd >/dev/null 2>&1 && return 0
    [ "$(id -u)" = 0 ] || die "dockerd is missing and installing docker.io needs root; run as root"
    echo "ensure-dockerd: installing docker.io with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    command -v dockerd >/dev/null 2>&1 || die "apt-get installed docker.io but no dockerd is on PATH"
}

docker_up() { docker info >/dev/null 2>&1; }

# PID from our pid file when that process is still a dockerd; empty otherwise.
our_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 0
    pid=$(cat "$PIDFILE")
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        echo "$pid"
    fi
}

start_dockerd() {
    local pid
    pid=$(our_pid)
    if [ -n "$pid" ]; then
        echo "ensure-dockerd: dockerd (pid $pid) is starting, waiting for it" >&2
        return 0
    fi
    # A stale docker.pid from a killed daemon makes dockerd refuse to start.
    if [ -s /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    mkdir -p "$(dirname "$LOG")"
    # setsid: the daemon must outlive this script and the shell's process group.
    setsid dockerd >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    echo "ensure-dockerd: started dockerd (pid $!, log $LOG)" >&2
}

wait_for_docker() {
    local deadline=$((SECONDS + WAIT_SECONDS)) pid
    until docker_up; do
        pid=$(our_pid)
        if [ -z "$pid" ]; then
            tail -n 20 "$LOG" >&2 || true
            die "dockerd exited while starting; see $LOG"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOG" >&2 || true
            die "docker info still fails after ${WAIT_SECONDS}s; see $LOG"
        fi
        sleep 1
    done
}

main() {
    install_docker
    command -v docker >/dev/null 2>&1 || die "no docker CLI on PATH; install docker.io"
    if ! docker_up; then
        start_dockerd
        wait_for_docker
    fi
    docker version --format 'docker ready: server {{.Server.Version}}, client {{.Client.Version}}'
}

main "$@"
