#!/usr/bin/env bash
# make test-vagrant: the VM tier. molecule scenario molecule/vagrant-ipip on three Debian 12 VMs
# (Vagrant + libvirt, software emulation) with the kernel ipip backend, step by step:
#   destroy (leftovers), syntax, create, prepare, converge, idempotence, verify, side-effect
#   (reboot one node; PYFLANNEL_VAGRANT_REBOOT=0 skips it; PYFLANNEL_VAGRANT_IDEMPOTENCE=0 the
#   idempotence run), destroy; the VMs and networks are destroyed also on failure or Ctrl-C.
# Prints the time of every step, the host's peak RAM use, where the converge spent its time
# (scripts/task-times.py over its log in build/vagrant/logs/, also when a timeout stopped it) and
# the processes besides the guests that used the host's CPU meanwhile. Prepares what it needs:
#   scripts/ensure-libvirt.sh      vagrant, libvirt, QEMU, daemons, /dev/kvm
#   scripts/build-vagrant-box.sh   the box (reused when up to date)
#   build/venv-vagrant             molecule's Vagrant driver, molecule-plugins[vagrant] 25.8.12
#                                  (26.x needs community.vagrant from Galaxy, unreachable here), in
#                                  a venv over the shared packages (--system-site-packages), so the
#                                  globally installed molecule-plugins stays as it is.
#   scripts/molecule-vagrant.sh            the scenario
#   scripts/molecule-vagrant.sh --keep     leave the VMs up after the run (for debugging;
#                                          `scripts/molecule-vagrant.sh --destroy` removes them)
set -Euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIO=vagrant-ipip
VENV="$REPO/build/venv-vagrant"
DRIVER_SPEC='molecule-plugins[vagrant]==25.8.12'
STEPS=(syntax create prepare converge)
# The idempotence run; PYFLANNEL_VAGRANT_IDEMPOTENCE=0 leaves it out (.ci/run, for its time
# budget: the Docker scenarios check changed=0 of the same site.yml on three backends).
[ "${PYFLANNEL_VAGRANT_IDEMPOTENCE:-1}" = 1 ] && STEPS+=(idempotence)
STEPS+=(verify)
# The reboot of one VM (side-effect); PYFLANNEL_VAGRANT_REBOOT=0 leaves it out (debugging, .ci/run).
[ "${PYFLANNEL_VAGRANT_REBOOT:-1}" = 1 ] && STEPS+=(side-effect)

export VAGRANT_HOME=${VAGRANT_HOME:-$REPO/build/vagrant/home}
# No outside access: no version or box-update checks.
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export VAGRANT_DEFAULT_PROVIDER=libvirt LIBVIRT_DEFAULT_URI=qemu:///system
export PYFLANNEL_MOLECULE_PREFIX=${PYFLANNEL_MOLECULE_PREFIX:-pyflv}
export PYFLANNEL_VAGRANT_PYTHON="$VENV/bin/python"

log() { echo "molecule-vagrant: $*"; }
die() { echo "molecule-vagrant: $*" >&2; exit 1; }

ensure_driver() {
    if ! "$VENV/bin/python" -c 'import molecule_plugins.vagrant, vagrant' 2>/dev/null ||
        [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("molecule-plugins"))')" != 25.8.12 ]; then
        log "installing $DRIVER_SPEC into $VENV"
        python3 -m venv --system-site-packages "$VENV" || die "cannot create $VENV"
        "$VENV/bin/python" -m pip install -q "$DRIVER_SPEC" || die "pip install $DRIVER_SPEC failed"
    fi
    local modules
    modules=$("$VENV/bin/python" -c \
        'import molecule_plugins.vagrant as v, os; print(os.path.dirname(v.__file__) + "/modules")')
    # The driver's `vagrant` module (the project's own come with the collection, by FQCN).
    export ANSIBLE_LIBRARY="$modules"
}

molecule_cmd() { "$VENV/bin/python" -m molecule "$@"; }

# Peak of the host's used RAM (MemTotal - MemAvailable), sampled every 2 s into $1.
sample_ram() {
    local out=$1 peak=0 used
    while :; do
        used=$(awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print int((t-a)/1024)}' \
            /proc/meminfo)
        [ "$used" -gt "$peak" ] && { peak=$used; echo "$peak" >"$out"; }
        sleep 2
    done
}

# CPU seconds per process (pid, seconds, command), for the report of who shared the host's CPU.
cpu_snapshot() { ps -eo pid=,cputimes=,comm= | sort -n; }

# The processes that used more than 60 CPU seconds between the snapshot in $1 and now, but the
# guests (qemu): a busy host makes every emulated step slower.
report_cpu() {
    local before=$1
    cpu_snapshot | awk -v min=60 'NR == FNR { seen[$1] = $2; next }
        $3 !~ /^qemu/ { used = $2 - ($1 in seen ? seen[$1] : 0); if (used > min) printf "  %6d s  %s (pid %d)\n", used, $3, $1 }' \
        "$before" - | sort -rn | head -n 8
}

SAMPLER=""
destroy_all() {
    log "destroy"
    timeout 600 "$VENV/bin/python" -m molecule destroy -s "$SCENARIO" >/dev/null ||
        log "molecule destroy failed: check 'virsh list --all' and 'virsh net-list --all'"
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [ "${KEEP:-0}" = 1 ] || destroy_all
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
    exit "$rc"
}

main() {
    KEEP=0
    case "${1:-}" in
        --keep) KEEP=1 ;;
        --destroy) ensure_driver; cd "$REPO" && destroy_all; return 0 ;;
        "") ;;
        *) die "unknown argument '$1' (usage: $0 [--keep|--destroy])" ;;
    esac
    [ "$(id -u)" = 0 ] || die "needs root (libvirt, loop devices for the box)"
    command -v molecule >/dev/null 2>&1 ||
        die "molecule is missing; install the provision extra: pip install -e '.[provision]'"
    bash "$REPO/scripts/ensure-libvirt.sh" || die "libvirt is not usable"
    ensure_driver
    # The busybox test image archive the overlay_verify role loads into the VMs' dockerd.
    bash "$REPO/scripts/ensure-dockerd.sh" >/dev/null || die "no Docker daemon"
    bash "$REPO/scripts/build-images.sh" >/dev/null || die "could not build the busybox archive"
    cd "$REPO" || die "cannot cd to $REPO"
    # This tree's agent (the wheelhouse the flannel role copies to the VMs).
    bash "$REPO/scripts/build-dist.sh" wheelhouse >/dev/null || die "could not build dist/wheelhouse"
    # Leftovers of an interrupted run first: a rebuilt box must not pull the disk from under them.
    timeout 600 "$VENV/bin/python" -m molecule destroy -s "$SCENARIO" >/dev/null 2>&1 || true
    local start=$SECONDS
    bash "$REPO/scripts/build-vagrant-box.sh" || die "could not build the Vagrant box"
    local box_s=$((SECONDS - start))

    local peak_file="$REPO/build/vagrant/peak-ram-mib" base
    base=$(awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print int((t-a)/1024)}' /proc/meminfo)
    : >"$peak_file"
    sample_ram "$peak_file" &
    SAMPLER=$!
    trap finish EXIT
    trap 'exit 130' INT TERM

    local logs="$REPO/build/vagrant/logs" cpu_before="$REPO/build/vagrant/cpu-before"
    mkdir -p "$logs" && rm -f "$logs"/*.log
    cpu_snapshot >"$cpu_before"
    local total=$SECONDS step t rc=0
    local -a times=("box: ${box_s}s")
    for step in "${STEPS[@]}"; do
        log "== molecule $step -s $SCENARIO"
        t=$SECONDS
        # Bounded: a hung VM must not hold CI until its global limit (a cold converge of the
        # three emulated guests measured 1723 s on a busy day).
        timeout 2400 "$VENV/bin/python" -m molecule "$step" -s "$SCENARIO" 2>&1 |
            tee "$logs/$step.log" || { rc=${PIPESTATUS[0]}; }
        times+=("$step: $((SECONDS - t))s")
        [ "$rc" = 0 ] || { times[-1]+=" FAILED (rc $rc)"; break; }
    done
    if [ "$KEEP" = 0 ]; then
        t=$SECONDS
        destroy_all
        times+=("destroy: $((SECONDS - t))s")
        KEEP=1 # done: finish() need not destroy again
    fi
    kill "$SAMPLER" 2>/dev/null
    SAMPLER=""
    # Last, where a CI log's tail shows it: the converge's time per play and slowest tasks, the
    # failed step's too, and who else used the CPU.
    [ -f "$logs/converge.log" ] && python3 "$REPO/scripts/task-times.py" "$logs/converge.log"
    [ "$rc" != 0 ] && [ "$step" != converge ] && [ -f "$logs/$step.log" ] &&
        python3 "$REPO/scripts/task-times.py" --top 5 "$logs/$step.log"
    log "host processes besides the guests with over 60 CPU seconds during the steps:"
    report_cpu "$cpu_before"
    log "${times[*]}"
    log "total $((SECONDS - total))s; host RAM in use: ${base} MiB before, peak $(cat "$peak_file") MiB"
    if [ "$rc" = 0 ]; then
        echo "molecule-vagrant: 1 passed, 0 failed"
    else
        echo "molecule-vagrant: 0 passed, 1 failed"
    fi
    return "$rc"
}

main "$@"
