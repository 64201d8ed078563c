# shellcheck shell=bash
# Sourced by lab.sh and node-smoke.sh: the `docker run` flags that make a node container run
# systemd as PID 1 (and a nested dockerd) without --privileged. --privileged fails here because
# CAP_SYS_RESOURCE is not in root's bounding set; SIGRTMIN+3 is systemd's "halt" (`docker
# import` cannot set STOPSIGNAL). molecule lists the same capabilities in .config/molecule.
# shellcheck disable=SC2034  # used by the scripts that source this file
NODE_RUN_FLAGS=(
    --cap-add=ALL --cap-drop=SYS_RESOURCE
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined
    --device /dev/net/tun
    --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw
    --tmpfs /run --tmpfs /run/lock
    --stop-signal SIGRTMIN+3
)
