#!/usr/bin/env bash
# Build the local Docker images the test rig needs; images cannot be pulled here.
#   pyflannel-node:bookworm-plain  a plain Debian 12 host: systemd, python3 and sshd only
#                                  (debootstrap minbase, docker import). The packages of
#                                  scripts/rig-packages.txt and their dependencies are in apt's
#                                  cache (/var/cache/apt/archives) with the apt lists, not
#                                  installed: the roles install them with apt, without a mirror.
#   busybox:local                  busybox for containers run inside nodes (from Debian's
#                                  busybox-static .deb), also saved as
#                                  build/images/busybox-local.tar for air-gapped loading
# Present images are reused; --force rebuilds both. Needs root and a running dockerd
# (scripts/ensure-dockerd.sh).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$REPO/build"
NODE_IMAGE=pyflannel-node:bookworm-plain
BUSYBOX_IMAGE=busybox:local
BUSYBOX_ARCHIVE="$BUILD/images/busybox-local.tar"
RIG_PACKAGES="$REPO/scripts/rig-packages.txt"
SUITE=bookworm
# What a minimal Debian host has: an init, D-Bus (systemd's API), Python for Ansible, SSH.
PACKAGES=systemd,systemd-sysv,dbus,python3,openssh-server
# Masked because a node container shares the host kernel and has no console:
# - getty.target: a detached container has no console to log in on (pulls console-getty).
# - systemd-modules-load: with CAP_SYS_MODULE it would load modules into the host kernel.
# - sys-kernel-debug/tracing mounts: debugfs/tracefs in a node would expose host-wide,
#   writable kernel tracing; nothing on a node needs them.
# - udev and systemd-resolved units: not installed, masked so that a package a role installs
#   later cannot bring in udev (fails on a container's /sys) or take over the resolv.conf
#   Docker bind-mounts.
# - apt-daily timers: would take the dpkg lock while the provisioner installs packages
#   (and nodes have no route to a mirror); e2scrub: a node has no ext4 devices of its own.
MASK_UNITS=(
    getty.target systemd-modules-load.service sys-kernel-debug.mount sys-kernel-tracing.mount
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
    systemd-udev-trigger.service systemd-udev-settle.service systemd-resolved.service
)

FORCE=0
APT_UPDATED=0

die() { echo "build-images: $*" >&2; exit 1; }
log() { echo "build-images: $*"; }

usage() {
    echo "usage: $0 [--force]   (--force rebuilds images that already exist)"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --force) FORCE=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument '$1'" ;;
        esac
        shift
    done
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Import a tar stream from stdin as $1 (docker import with the remaining arguments);
# a --force rebuild would otherwise leave the previous image behind untagged.
import_image() {
    local name=$1 old
    shift
    old=$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)
    docker import "$@" - "$name" >/dev/null
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$name")" ]; then
        docker image rm "$old" >/dev/null 2>&1 || true # still used by a container: keep it
    fi
}

image_size() { docker image inspect -f '{{.Size}}' "$1" | numfmt --to=iec; }

# Print "URI SUITE" for every deb entry of the machine's apt sources, one-line
# (sources.list, *.list) and deb822 (*.sources) formats alike.
apt_source_entries() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush(   i, j, nu, ns, u, s) {
                if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                    nu = split(uris, u, " "); ns = split(suites, s, " ")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key); $1 = ""; val = $0
                gsub(/^[ \t]+|[ \t]+$/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }
        ' "$f"
    done
}

# The Debian mirror to debootstrap from: an entry for $SUITE itself, else any entry
# for a Debian release suite (the same mirror serves $SUITE).
find_mirror() {
    local entries mirror
    entries=$(apt_source_entries)
    mirror=$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$entries")
    if [ -z "$mirror" ]; then
        mirror=$(awk '$2 ~ /^(bullseye|bookworm|trixie|forky|sid|stable|testing|unstable)$/ {
            print $1; exit }' <<<"$entries")
    fi
    [ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list or" \
        "/etc/apt/sources.list.d/*.{list,sources}; add a 'deb <mirror> $SUITE main' entry"
    echo "${mirror%/}"
}

# Unmount anything left below a directory (an interrupted debootstrap leaves proc/sys
# mounted) before deleting it, so rm never walks into a kernel filesystem.
unmount_below() {
    local mnt
    while read -r mnt; do
        [ -n "$mnt" ] && umount -l "$mnt"
    done < <(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

remove_tree() {
    [ -e "$1" ] || return 0
    unmount_below "$1"
    rm -rf --one-file-system "$1"
}

# The package names of scripts/rig-packages.txt (one a line, '#' comments).
rig_packages() {
    [ -r "$RIG_PACKAGES" ] || die "$RIG_PACKAGES is missing"
    sed -e 's/#.*//' "$RIG_PACKAGES" | awk 'NF { print $1 }'
}

# The rootfs's apt sources: the mirror's entries for $SUITE and its -updates and -security
# suites as this machine has them (a real Debian 12 host has all three), else debootstrap's.
write_apt_sources() {
    local rootfs=$1 entries
    entries=$(apt_source_entries | awk -v s="$SUITE" \
        '$2 == s || $2 == s "-updates" || $2 == s "-security" { print "deb " $1 " " $2 " main" }' |
        awk '!seen[$0]++')
    [ -n "$entries" ] || return 0
    printf '%s\n' "$entries" >"$rootfs/etc/apt/sources.list"
}

# The rig's packages into apt's cache, not installed: nodes install them later with apt from
# these lists and .deb files, without a mirror (the node network has no route out).
cache_rig_packages() {
    local rootfs=$1
    local -a packages
    mapfile -t packages < <(rig_packages)
    [ "${#packages[@]}" -gt 0 ] || die "$RIG_PACKAGES names no package"
    write_apt_sources "$rootfs"
    chroot "$rootfs" apt-get update -qq >>"$BUILD/debootstrap.log" 2>&1 ||
        die "apt-get update in the node rootfs failed; see $BUILD/debootstrap.log"
    # Up to date like a maintained host (debootstrap takes $SUITE only, not its updates), so
    # the roles' installs do not have to upgrade systemd on the running node.
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get upgrade -y -qq \
        >>"$BUILD/debootstrap.log" 2>&1 ||
        die "apt-get upgrade in the node rootfs failed; see $BUILD/debootstrap.log"
    chroot "$rootfs" apt-get clean
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -qq --download-only \
        --no-install-recommends "${packages[@]}" >>"$BUILD/debootstrap.log" 2>&1 ||
        die "downloading ${packages[*]} into the node's apt cache failed; see $BUILD/debootstrap.log"
    # None of them may be installed: the image is a plain host.
    if chroot "$rootfs" dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' "${packages[@]}" \
        2>/dev/null | grep -q '^ii'; then
        die "the node rootfs has some of ${packages[*]} installed; it must only cache them"
    fi
    log "apt cache: $(find "$rootfs/var/cache/apt/archives" -name '*.deb' | wc -l) .deb files" \
        "($(du -sh "$rootfs/var/cache/apt/archives" | cut -f1)) for ${#packages[@]} packages"
}

customize_rootfs() {
    local rootfs=$1
    chroot "$rootfs" systemctl -q mask "${MASK_UNITS[@]}"
    # Empty machine-id: systemd makes a fresh one in every container at boot.
    : >"$rootfs/etc/machine-id"
    mkdir -p "$rootfs/var/lib/dbus"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    ln -s /etc/machine-id "$rootfs/var/lib/dbus/machine-id"
    # apt's lists and the cached .deb files stay (cache_rig_packages); its binary caches are
    # rebuilt on first use. Docs and logs are of no use on a node.
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
}

build_node_image() {
    local rootfs="$BUILD/node-rootfs" cache="$BUILD/debootstrap-cache" mirror start
    local rig_sum
    rig_sum=$(sha256sum "$RIG_PACKAGES" | cut -c1-16)
    if [ "$FORCE" = 0 ] && image_exists "$NODE_IMAGE"; then
        # An image whose apt cache lacks a package added to the list since is rebuilt.
        if docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$NODE_IMAGE" |
            grep -qx "PYFLANNEL_RIG_PACKAGES=$rig_sum"; then
            log "$NODE_IMAGE present, reused ($(image_size "$NODE_IMAGE"))"
            return 0
        fi
        log "$NODE_IMAGE predates scripts/rig-packages.txt's current list: rebuilding it"
    fi
    start=$SECONDS
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    mirror=$(find_mirror)
    log "debootstrap $SUITE from $mirror"
    remove_tree "$rootfs"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$cache" \
        "$SUITE" "$rootfs" "$mirror" >"$BUILD/debootstrap.log" 2>&1 ||
        { tail -n 20 "$BUILD/debootstrap.log" >&2; die "debootstrap failed; see $BUILD/debootstrap.log"; }
    unmount_below "$rootfs"  # debootstrap should have, but a failed step may not
    cache_rig_packages "$rootfs"
    customize_rootfs "$rootfs"
    # container=docker tells systemd it runs in a container before it probes. (docker
    # import takes no STOPSIGNAL: run nodes with --stop-signal SIGRTMIN+3, systemd's halt.)
    tar -C "$rootfs" --numeric-owner -c . |
        import_image "$NODE_IMAGE" -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
            -c "ENV PYFLANNEL_RIG_PACKAGES=$rig_sum"
    remove_tree "$rootfs"
    log "$NODE_IMAGE built in $((SECONDS - start))s ($(image_size "$NODE_IMAGE"))"
}

# busybox-static's binary from Debian's .deb, downloaded on this machine with apt (kept in
# build/debs); the node image does not carry busybox.
extract_busybox() {
    local dest=$1 debs="$BUILD/debs" deb unpacked
    mkdir -p "$debs"
    deb=$(find "$debs" -maxdepth 1 -name 'busybox-static_*.deb' | sort | tail -n 1)
    if [ -z "$deb" ]; then
        # Lists never fetched on this machine: fetch them once, then try again.
        (cd "$debs" && apt-get download -qq busybox-static 2>/dev/null) ||
            { apt-get update -qq >/dev/null && (cd "$debs" && apt-get download -qq busybox-static); } ||
            die "apt-get download busybox-static failed (no mirror in this machine's apt sources?)"
        deb=$(find "$debs" -maxdepth 1 -name 'busybox-static_*.deb' | sort | tail -n 1)
    fi
    unpacked=$(mktemp -d "$BUILD/busybox-deb.XXXXXX")
    dpkg-deb -x "$deb" "$unpacked"
    install -m 0755 "$unpacked/bin/busybox" "$dest"
    rm -rf "$unpacked"
}

build_busybox_image() {
    local dir="$BUILD/busybox-root" start applet
    mkdir -p "$(dirname "$BUSYBOX_ARCHIVE")"
    if [ "$FORCE" = 0 ] && image_exists "$BUSYBOX_IMAGE"; then
        log "$BUSYBOX_IMAGE present, reused ($(image_size "$BUSYBOX_IMAGE"))"
    else
        start=$SECONDS
        remove_tree "$dir"
        mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root"
        chmod 1777 "$dir/tmp"
        extract_busybox "$dir/bin/busybox"
        for applet in $("$dir/bin/busybox" --list); do
            [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
            >"$dir/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
        tar -C "$dir" --numeric-owner -c . | import_image "$BUSYBOX_IMAGE" -c 'CMD ["/bin/sh"]'
        remove_tree "$dir"
        rm -f "$BUSYBOX_ARCHIVE"
        log "$BUSYBOX_IMAGE built in $((SECONDS - start))s ($(image_size "$BUSYBOX_IMAGE"))"
    fi
    if [ ! -s "$BUSYBOX_ARCHIVE" ]; then
        docker save -o "$BUSYBOX_ARCHIVE.tmp" "$BUSYBOX_IMAGE"
        mv "$BUSYBOX_ARCHIVE.tmp" "$BUSYBOX_ARCHIVE"
    fi
    log "$BUSYBOX_IMAGE archive: $BUSYBOX_ARCHIVE ($(du -h "$BUSYBOX_ARCHIVE" | cut -f1))"
}

main() {
    trap 'echo "build-images: failed: $BASH_COMMAND (line $LINENO)" >&2' ERR
    parse_args "$@"
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot); run as root"
    docker info >/dev/null 2>&1 || die "docker does not answer; run scripts/ensure-dockerd.sh first"
    mkdir -p "$BUILD"
    # One build at a time: two runs would debootstrap into the same directory.
    exec 9>"$BUILD/.build-images.lock"
    flock 9
    local start=$SECONDS
    build_node_image
    build_busybox_image
    log "done in $((SECONDS - start))s"
}

main "$@"
