#!/usr/bin/env bash
# make dist: what an operator deploys, built from this checkout into dist/:
#   dist/wheelhouse/pyflannel-<version>-py3-none-any.whl and the wheels of its dependencies
#       (the flannel role's flannel_wheelhouse_dir: nodes install from it with pip --no-index;
#       the controller installs the same wheel for the collection's filters)
#   dist/pyflannel-overlay-<version>.tar.gz
#       the Ansible collection (ansible-galaxy collection install dist/pyflannel-overlay-*.tar.gz)
# The dependencies' compiled wheels (grpcio, ...) are for this Python and machine: build with a
# Python of the nodes' minor version and architecture (PYTHON=...); the role checks it.
#   scripts/build-dist.sh              both
#   scripts/build-dist.sh wheelhouse   only the wheelhouse
#   scripts/build-dist.sh collection   only the collection
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
DIST=$REPO/dist

log() { echo "build-dist: $*"; }
die() { echo "build-dist: $*" >&2; exit 1; }

version_of() { sed -n "s/^$2 *[=:] *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$1" | head -n1; }

wheelhouse() {
    local out=$DIST/wheelhouse
    mkdir -p "$out"
    # This tree's agent, never a wheel of the same version built from an older one.
    rm -f "$out"/pyflannel-*.whl
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$out" "$REPO" ||
        die "pip wheel of $REPO failed"
    log "$(find "$out" -name '*.whl' | wc -l) wheels in $out"
}

collection() {
    mkdir -p "$DIST"
    rm -f "$DIST"/pyflannel-overlay-*.tar.gz
    # galaxy.yml's build_ignore leaves out everything that is not Ansible content.
    ansible-galaxy collection build --force --output-path "$DIST" "$REPO" >/dev/null ||
        die "ansible-galaxy collection build failed"
    log "$(ls "$DIST"/pyflannel-overlay-*.tar.gz)"
}

main() {
    local galaxy package
    galaxy=$(version_of "$REPO/galaxy.yml" version)
    package=$(version_of "$REPO/pyproject.toml" version)
    [ "$galaxy" = "$package" ] ||
        die "galaxy.yml has version $galaxy, pyproject.toml $package: make them equal"
    case "${1:-all}" in
        all) wheelhouse; collection ;;
        wheelhouse) wheelhouse ;;
        collection) collection ;;
        *) die "unknown target '$1' (usage: $0 [wheelhouse|collection])" ;;
    esac
}

main "$@"
