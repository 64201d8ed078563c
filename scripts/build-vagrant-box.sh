#!/usr/bin/env bash
# Build the Debian 12 Vagrant box (libvirt provider) the VM test tier boots: debootstrap bookworm
# with a kernel, grub, systemd (networkd for the network), openssh-server, sudo, python3 and a
# `vagrant` user with Vagrant's insecure key; nothing else installed: the roles install the rest.
# For installs without a mirror (the VMs' networks are isolated), the box carries the apt lists
# and, in apt's cache (downloaded, not installed), the .deb files of scripts/rig-packages.txt and
# their dependencies.
#   scripts/build-vagrant-box.sh           build when missing or stale, add to Vagrant
#   scripts/build-vagrant-box.sh --force   rebuild
# Output: build/vagrant/pyflannel-bookworm.box, added as box `pyflannel-bookworm` in
# VAGRANT_HOME (default build/vagrant/home). A box is stale when rig-packages.txt or this script
# changed (checksum in build/vagrant/box.stamp): it is then rebuilt and replaced in Vagrant and
# in the libvirt pool. Needs root; scripts/ensure-libvirt.sh installs qemu-img and libvirt.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$REPO/build/vagrant"
BOX_NAME=pyflannel-bookworm
BOX_FILE="$BUILD/$BOX_NAME.box"
STAMP="$BUILD/box.stamp"
RIG_PACKAGES="$REPO/scripts/rig-packages.txt"
export VAGRANT_HOME=${VAGRANT_HOME:-$BUILD/home}
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
# libvirt storage pool the scenario's domains use (vagrant-libvirt uploads the box image there).
POOL=${PYFLANNEL_LIBVIRT_POOL:-pyflannel}
SUITE=bookworm
DISK_SIZE=8G
LABEL=pyflroot
# iproute2: Vagrant's guest capabilities call /sbin/ip to list the interfaces.
# initramfs-tools + udev: the kernel needs an initramfs that finds the virtio disk by label.
BOX_PACKAGES=systemd,systemd-sysv,dbus,udev,kmod,initramfs-tools,linux-image-amd64,grub-pc
BOX_PACKAGES+=,openssh-server,sudo,python3,iproute2
# As on Debian's cloud images (a fresh host as operators get one); the Docker scenarios' plain
# node image lacks them, so the roles' installs of these are tested there.
BOX_PACKAGES+=,ca-certificates,procps,iputils-ping
# Timers that would take the dpkg lock while the roles install packages, or scan disks.
MASK_UNITS=(apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service)

FORCE=0
WORK="" LOOP="" MNT="" RIG_LIST=""

die() { trap - ERR; echo "build-vagrant-box: $*" >&2; exit 1; }
log() { echo "build-vagrant-box: $*"; }

# The packages of rig-packages.txt (as read once at the start, RIG_LIST): one a line, '#' comments.
rig_packages() { sed -e 's/#.*//' <<<"$RIG_LIST" | awk 'NF { print $1 }'; }

# What the box is made from: a change to either means a rebuild.
wanted_stamp() { { cat "$0"; printf '%s\n' "$RIG_LIST"; } | sha256sum | cut -d' ' -f1; }

# "SITE SUITE" of the machine's Debian sources (apt-get reads every source format for us).
debian_sources() {
    apt-get indextargets --format '$(SITE) $(RELEASE)' 'Created-By: Packages' |
        awk '$2 ~ /^'"$SUITE"'(-updates|-security)?$/' | sort -u
}

cleanup() {
    set +e
    if [ -n "$MNT" ]; then
        awk -v d="$MNT" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
            while read -r m; do umount -l "$m"; done
    fi
    [ -n "$LOOP" ] && { partx -d "$LOOP" 2>/dev/null; losetup -d "$LOOP"; }
    [ -n "$WORK" ] && rm -rf --one-file-system "$WORK"
    return 0
}

chroot_run() { chroot "$MNT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

make_disk() {
    local raw=$1
    truncate -s "$DISK_SIZE" "$raw"
    # One bootable partition, MBR (grub-pc), 1 MiB gap for grub's core image.
    echo 'start=2048, type=83, bootable' | sfdisk -q "$raw"
    LOOP=$(losetup -f --show "$raw")
    # losetup -P makes no partition devices on these machines; partx does.
    partx -a "$LOOP"
    [ -b "${LOOP}p1" ] || die "no partition device ${LOOP}p1 after partx -a $LOOP"
    mkfs.ext4 -q -L "$LABEL" "${LOOP}p1"
    mount "${LOOP}p1" "$MNT"
}

install_system() {
    local mirror=$1
    debootstrap --variant=minbase --include="$BOX_PACKAGES" "$SUITE" "$MNT" "$mirror" \
        >"$BUILD/debootstrap.log" 2>&1 ||
        { tail -n 20 "$BUILD/debootstrap.log" >&2; die "debootstrap failed; see $BUILD/debootstrap.log"; }
    mount --bind /dev "$MNT/dev"
    mount -t proc proc "$MNT/proc"
    mount -t sysfs sys "$MNT/sys"
}

write_sources() {
    local site suite
    : >"$MNT/etc/apt/sources.list"
    {
        while read -r site suite; do
            printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "$site" "$suite"
            printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n'
        done < <(debian_sources)
    } >"$MNT/etc/apt/sources.list.d/debian.sources"
}

# The rig's packages in apt's cache, downloaded, not installed; the lists stay.
fill_apt_cache() {
    local -a pkgs
    mapfile -t pkgs < <(rig_packages)
    [ ${#pkgs[@]} -gt 0 ] || die "$RIG_PACKAGES names no package"
    chroot_run apt-get update -qq >/dev/null || die "apt-get update in the box failed"
    chroot_run apt-get install -y -qq --no-install-recommends --download-only "${pkgs[@]}" \
        >/dev/null || die "apt-get --download-only ${pkgs[*]} failed (a name in $RIG_PACKAGES?)"
    rm -f "$MNT"/var/cache/apt/*.bin
}

configure_system() {
    local pubkey
    pubkey=$(dpkg -L vagrant | grep 'keys/vagrant.pub$' | head -n1)
    [ -n "$pubkey" ] || die "Vagrant's insecure public key not found (dpkg -L vagrant)"
    echo "LABEL=$LABEL / ext4 errors=remount-ro 0 1" >"$MNT/etc/fstab"
    echo "$BOX_NAME" >"$MNT/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$BOX_NAME" >"$MNT/etc/hosts"
    # Throwaway test VMs (their disks are cache=unsafe anyway): dpkg without an fsync per file,
    # which on an emulated CPU is much of a package install's time (Docker's images do the same).
    echo force-unsafe-io >"$MNT/etc/dpkg/dpkg.cfg.d/unsafe-io"
    # debootstrap copied this machine's resolver; the VMs have no DNS.
    : >"$MNT/etc/resolv.conf"
    # Every VM makes its own machine-id at first boot (networkd's DHCP client id comes from it)
    # and its own SSH host keys.
    : >"$MNT/etc/machine-id"
    rm -f "$MNT/var/lib/dbus/machine-id" "$MNT"/etc/ssh/ssh_host_*
    mkdir -p "$MNT/etc/systemd/system/ssh.service.d"
    # ECDSA and Ed25519 only: an RSA key takes long to make on an emulated CPU. Made before the
    # unit's own `sshd -t`, which fails without host keys.
    cat >"$MNT/etc/systemd/system/ssh.service.d/host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'for t in ecdsa ed25519; do f=/etc/ssh/ssh_host_$${t}_key; \
    [ -s "$$f" ] || ssh-keygen -q -t $$t -N "" -f "$$f"; done'
ExecStartPre=/usr/sbin/sshd -t
EOF
    # DHCP on the first interface (Vagrant's management network); Vagrant writes
    # 50-vagrant-<dev>.network for the others.
    printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' \
        >"$MNT/etc/systemd/network/10-management.network"
    chroot_run systemctl -q enable systemd-networkd.service
    chroot_run systemctl -q mask "${MASK_UNITS[@]}"
    # The vagrant user: Vagrant's insecure key (Vagrant swaps it for a fresh one on first up).
    chroot_run useradd -m -s /bin/bash vagrant
    install -d -m 0700 "$MNT/home/vagrant/.ssh"
    install -m 0600 "$pubkey" "$MNT/home/vagrant/.ssh/authorized_keys"
    chroot_run chown -R vagrant:vagrant /home/vagrant/.ssh
    echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$MNT/etc/sudoers.d/vagrant"
    chmod 0440 "$MNT/etc/sudoers.d/vagrant"
    # sshd: no reverse lookups (no DNS: every login would wait for a timeout).
    printf 'UseDNS no\nHostKey /etc/ssh/ssh_host_ecdsa_key\nHostKey /etc/ssh/ssh_host_ed25519_key\n' \
        >"$MNT/etc/ssh/sshd_config.d/vagrant.conf"
}

install_bootloader() {
    chroot_run grub-install --target=i386-pc --modules='part_msdos ext2' "$LOOP" \
        >/dev/null 2>&1 || die "grub-install failed"
    # A fixed grub.cfg: grub-mkconfig would name the build's loop device as root. eth0/eth1
    # names (net.ifnames=0) keep the interface names the inventory uses stable; the serial
    # console lets `virsh console` show the boot; quiet: kernel messages on an emulated UART
    # slow the boot down.
    cat >"$MNT/boot/grub/grub.cfg" <<EOF
set timeout=0
insmod part_msdos
insmod ext2
search --no-floppy --label --set=root $LABEL
menuentry 'Debian GNU/Linux' {
    linux /vmlinuz root=LABEL=$LABEL ro net.ifnames=0 console=tty0 console=ttyS0,115200 quiet
    initrd /initrd.img
}
EOF
    [ -e "$MNT/vmlinuz" ] && [ -e "$MNT/initrd.img" ] || die "no /vmlinuz or /initrd.img in the box"
}

package_box() {
    local raw=$1 dir=$WORK/box size
    mkdir -p "$dir"
    qemu-img convert -c -O qcow2 "$raw" "$dir/box.img"
    size=$(( $(stat -c %s "$raw") / 1024 / 1024 / 1024 ))
    printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$size" \
        >"$dir/metadata.json"
    cat >"$dir/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
EOF
    tar -C "$dir" -cf "$BOX_FILE.tmp" metadata.json Vagrantfile box.img
    mv "$BOX_FILE.tmp" "$BOX_FILE"
}

build_box() {
    local mirror
    mirror=$(debian_sources | awk -v s="$SUITE" '$2 == s { print $1; exit }')
    [ -n "$mirror" ] || die "no Debian $SUITE entry in the apt sources; add one"
    WORK=$(mktemp -d "$BUILD/box-build.XXXXXX")
    MNT="$WORK/root"
    mkdir -p "$MNT"
    log "debootstrap $SUITE from $mirror"
    make_disk "$WORK/disk.raw"
    install_system "$mirror"
    write_sources
    fill_apt_cache
    configure_system
    install_bootloader
    sync
    cleanup_mounts
    package_box "$WORK/disk.raw"
}

cleanup_mounts() {
    awk -v d="$MNT" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m"; done
    partx -d "$LOOP" 2>/dev/null || true
    losetup -d "$LOOP"
    LOOP=""
}

# The pool's copies of the box (vagrant-libvirt uploads it as <box>_vagrant_box_image_*).
pool_box_volumes() {
    virsh -q -c qemu:///system vol-list "$POOL" 2>/dev/null |
        awk -v b="$BOX_NAME" 'index($1, b "_vagrant_box_image") == 1 { print $1 }'
}

# A domain whose disk is backed by the old box image would break when that image goes.
check_box_unused() {
    local dom disk vol path
    for vol in $(pool_box_volumes); do
        path=$(virsh -q -c qemu:///system vol-path "$vol" --pool "$POOL")
        for dom in $(virsh -q -c qemu:///system list --all --name); do
            for disk in $(virsh -q -c qemu:///system domblklist "$dom" | awk '{print $2}'); do
                [ -f "$disk" ] || continue
                if qemu-img info -U --backing-chain "$disk" 2>/dev/null | grep -qF "$path"; then
                    die "domain $dom runs on the current box; remove it first" \
                        "(scripts/molecule-vagrant.sh --destroy)"
                fi
            done
        done
    done
}

# Replace the box in Vagrant and drop the pool's copy of an older one.
register_box() {
    vagrant box remove --force --all "$BOX_NAME" >/dev/null 2>&1 || true
    local vol
    for vol in $(pool_box_volumes); do
        virsh -q -c qemu:///system vol-delete "$vol" --pool "$POOL" >/dev/null
    done
    vagrant box add --name "$BOX_NAME" "$BOX_FILE" >/dev/null || die "vagrant box add failed"
}

box_registered() { vagrant box list 2>/dev/null | awk '{print $1}' | grep -qx "$BOX_NAME"; }

main() {
    trap 'echo "build-vagrant-box: failed: $BASH_COMMAND (line $LINENO)" >&2' ERR
    trap cleanup EXIT
    case "${1:-}" in
        --force) FORCE=1 ;;
        "") ;;
        *) die "unknown argument '$1' (usage: $0 [--force])" ;;
    esac
    [ "$(id -u)" = 0 ] || die "needs root (loop devices, debootstrap, chroot)"
    local cmd
    for cmd in debootstrap qemu-img vagrant virsh sfdisk partx; do
        command -v "$cmd" >/dev/null 2>&1 ||
            die "$cmd is missing; run scripts/ensure-libvirt.sh (and apt-get install debootstrap)"
    done
    mkdir -p "$BUILD" "$VAGRANT_HOME"
    exec 9>"$BUILD/.build-box.lock"
    flock 9
    local start=$SECONDS stamp
    # Read once: the stamp and the box's apt cache come from the same list even when the file
    # changes during the build.
    RIG_LIST=$(cat "$RIG_PACKAGES") || die "cannot read $RIG_PACKAGES"
    stamp=$(wanted_stamp)
    if [ "$FORCE" = 0 ] && [ -s "$BOX_FILE" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ]; then
        box_registered || register_box
        log "$BOX_NAME up to date, reused ($(du -h "$BOX_FILE" | cut -f1), $((SECONDS - start))s)"
        return 0
    fi
    check_box_unused
    build_box
    echo "$stamp" >"$STAMP"
    register_box
    log "$BOX_NAME built in $((SECONDS - start))s ($(du -h "$BOX_FILE" | cut -f1))"
}

main "$@"
