#!/usr/bin/env bash
# Stop the dockerd that ensure-dockerd.sh started, and only that one (PID from its pid file).
set -euo pipefail

PIDFILE=/run/pyflannel-dockerd.pid
STOP_SECONDS=30

if [ ! -s "$PIDFILE" ]; then
    echo "stop-dockerd: no $PIDFILE; nothing started by ensure-dockerd.sh to stop"
    exit 0
fi
pid=$(cat "$PIDFILE")
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    echo "stop-dockerd: pid $pid from $PIDFILE is not a running dockerd; removing stale pid file"
    rm -f "$PIDFILE"
    exit 0
fi

# SIGTERM lets dockerd stop its containers and its managed containerd cleanly.
kill -TERM "$pid"
deadline=$((SECONDS + STOP_SECONDS))
while [ -d "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 1
done
if [ -d "/proc/$pid" ]; then
    echo "stop-dockerd: dockerd (pid $pid) still running after ${STOP_SECONDS}s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PIDFILE"
echo "stop-dockerd: stopped dockerd (pid $pid)"
