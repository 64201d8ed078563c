#!/usr/bin/env bash
# Make this machine able to run Vagrant VMs with libvirt (the VM test tier):
# - installs vagrant, vagrant-libvirt, libvirt, QEMU from apt when missing;
# - starts virtlogd and libvirtd when they are not running (no systemd as PID 1 here) and records
#   the PIDs of what it started in build/vagrant/daemons.pids (scripts/ensure-libvirt.sh --stop
#   stops exactly those);
# - gives /dev/kvm group kvm, mode 0660 (without udev it is root:root 0600 and libvirt re-probes
#   QEMU on every call: minutes per domain start). The previous owner and mode are saved and put
#   back by --stop. The VMs still run in software emulation (driver qemu, cpu qemu64): the
#   /dev/kvm here is kvm_pvm, on which stock guest kernels hang.
#   scripts/ensure-libvirt.sh          install + start (quick when everything is there)
#   scripts/ensure-libvirt.sh --stop   stop the daemons this script started, restore /dev/kvm
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$REPO/build/vagrant"
PIDS="$STATE/daemons.pids"
KVM_SAVED="$STATE/kvm.mode"
# dnsmasq-base: libvirt's DHCP on the management network; debootstrap, fdisk: the box build.
PACKAGES=(vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base
    debootstrap fdisk)

die() { echo "ensure-libvirt: $*" >&2; exit 1; }
log() { echo "ensure-libvirt: $*"; }

[ "$(id -u)" = 0 ] || die "needs root (installs packages, starts libvirtd)"

install_missing() {
    local -a missing=()
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
}

# The daemon's own pid file names a live process of that name.
running() {
    local name=$1 pidfile=/run/$1.pid pid
    [ -f "$pidfile" ] || pidfile=/var/run/$1.pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

start_daemon() {
    local name=$1 i
    running "$name" && return 0
    log "starting $name"
    "$name" -d || die "$name -d failed"
    for i in $(seq 50); do
        running "$name" && break
        sleep 0.2
    done
    running "$name" || die "$name did not start (see its log in /var/log/libvirt/)"
    echo "$name $(cat "/run/$name.pid")" >>"$PIDS"
}

fix_kvm() {
    [ -c /dev/kvm ] || return 0
    getent group kvm >/dev/null || groupadd -r kvm
    [ -f "$KVM_SAVED" ] || stat -c '%U:%G %a' /dev/kvm >"$KVM_SAVED"
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
}

wait_libvirt() {
    local i
    for i in $(seq 60); do
        virsh -c qemu:///system version >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "libvirtd does not answer on qemu:///system"
}

# The storage pool of the VM tier's disks and box images (vagrant-libvirt's storage_pool_name).
ensure_pool() {
    local pool=${PYFLANNEL_LIBVIRT_POOL:-pyflannel} dir
    dir=/var/lib/libvirt/images/$pool
    virsh -q -c qemu:///system pool-info "$pool" >/dev/null 2>&1 ||
        virsh -q -c qemu:///system pool-define-as "$pool" dir --target "$dir" >/dev/null
    virsh -q -c qemu:///system pool-build "$pool" >/dev/null 2>&1 || true
    [ "$(virsh -q -c qemu:///system pool-info "$pool" | awk '$1 == "State:" {print $2}')" = running ] ||
        virsh -q -c qemu:///system pool-start "$pool" >/dev/null
}

stop_started() {
    local name pid i
    if [ -f "$PIDS" ]; then
        # libvirtd first (it talks to virtlogd), newest first.
        tac "$PIDS" | while read -r name pid; do
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || continue
            log "stopping $name (pid $pid)"
            kill "$pid"
            for i in $(seq 50); do
                [ -d "/proc/$pid" ] || break
                sleep 0.2
            done
        done
        rm -f "$PIDS"
    fi
    if [ -f "$KVM_SAVED" ] && [ -c /dev/kvm ]; then
        read -r owner mode <"$KVM_SAVED"
        chown "$owner" /dev/kvm && chmod "$mode" /dev/kvm
        rm -f "$KVM_SAVED"
    fi
}

main() {
    mkdir -p "$STATE"
    case "${1:-}" in
        --stop) stop_started; return 0 ;;
        "") ;;
        *) die "unknown argument '$1' (usage: $0 [--stop])" ;;
    esac
    install_missing
    fix_kvm
    start_daemon virtlogd
    start_daemon libvirtd
    wait_libvirt
    ensure_pool
    log "libvirt $(virsh -c qemu:///system version --daemon 2>/dev/null |
        awk '/Running against daemon/ {print $NF}') ready; vagrant $(vagrant --version |
        awk '{print $2}')"
}

main "$@"
