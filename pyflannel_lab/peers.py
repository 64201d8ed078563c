"""The real flannel the interop tier runs against: flanneld v0.20.2 and its mk-docker-opts.sh.

Where they come from, first match wins:
  1. `PYFLANNEL_FLANNELD` (a flanneld binary) and `PYFLANNEL_MK_DOCKER_OPTS` (the script);
  2. `PYFLANNEL_PEERS_DIR`, else `<repo>/../shared/peers` (on the team's machines and in CI the
     checkout and `shared/` are siblings): `flanneld-v0.20.2.xz`, unpacked once into
     `<repo>/build/peers/` and checked against its known sha256, and `mk-docker-opts.sh`.
A missing or wrong peer is a `PeersMissingError` whose message is one line: what is needed and
how to get it.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyflannel.errors import FlannelError

VERSION = "v0.20.2"
XZ_NAME = f"flanneld-{VERSION}.xz"
SCRIPT_NAME = "mk-docker-opts.sh"
# sha256 of the unpacked upstream binary (see ../shared/peers/README.md).
FLANNELD_SHA256 = "4bb3daab01e62094e566a224309f0e0c4e859358142914de5d5283b887025fd0"
REPO_ROOT = Path(__file__).resolve().parent.parent

HOW_TO_GET = (
    f"put {XZ_NAME} and {SCRIPT_NAME} (upstream flannel {VERSION}) in ../shared/peers next to "
    "the checkout or in $PYFLANNEL_PEERS_DIR, or set PYFLANNEL_FLANNELD=<flanneld binary> and "
    "PYFLANNEL_MK_DOCKER_OPTS=<mk-docker-opts.sh>"
)


class PeersMissingError(FlannelError):
    """The real flannel is not available; the message says how to provide it."""


@dataclass(frozen=True)
class Peers:
    flanneld: Path
    mk_docker_opts: Path


def peers_dir() -> Path:
    return Path(os.environ.get("PYFLANNEL_PEERS_DIR") or REPO_ROOT.parent / "shared" / "peers")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack(xz: Path) -> Path:
    """Unpack the xz once into build/peers (re-done when the copy there does not verify)."""
    target = REPO_ROOT / "build" / "peers" / f"flanneld-{VERSION}"
    if target.exists() and _sha256(target) == FLANNELD_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    try:
        with lzma.open(xz) as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except (OSError, lzma.LZMAError) as exc:
        tmp.unlink(missing_ok=True)
        raise PeersMissingError(f"cannot unpack {xz}: {exc}; {HOW_TO_GET}") from None
    if _sha256(tmp) != FLANNELD_SHA256:
        tmp.unlink()
        raise PeersMissingError(f"{xz} does not unpack to flanneld {VERSION}; {HOW_TO_GET}")
    tmp.chmod(0o755)
    tmp.replace(target)
    return target


def _check_version(binary: Path) -> None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise PeersMissingError(f"cannot run {binary}: {exc.strerror}; {HOW_TO_GET}") from None
    version = (out.stdout + out.stderr).strip()
    if version != VERSION:
        raise PeersMissingError(
            f"{binary} reports version {version!r}, the tier needs {VERSION}; {HOW_TO_GET}"
        )


def locate_flanneld() -> Path:
    override = os.environ.get("PYFLANNEL_FLANNELD")
    if override:
        binary = Path(override)
        if not binary.is_file():
            raise PeersMissingError(f"PYFLANNEL_FLANNELD={override} is not a file; {HOW_TO_GET}")
    else:
        xz = peers_dir() / XZ_NAME
        if not xz.is_file():
            raise PeersMissingError(f"flanneld {VERSION} not found ({xz} is missing); {HOW_TO_GET}")
        binary = _unpack(xz)
    _check_version(binary)
    return binary


def locate_mk_docker_opts() -> Path:
    override = os.environ.get("PYFLANNEL_MK_DOCKER_OPTS")
    script = Path(override) if override else peers_dir() / SCRIPT_NAME
    if not script.is_file():
        raise PeersMissingError(f"flannel's {SCRIPT_NAME} not found ({script}); {HOW_TO_GET}")
    return script


def locate() -> Peers:
    """Both peers, or PeersMissingError with a one-line message."""
    return Peers(flanneld=locate_flanneld(), mk_docker_opts=locate_mk_docker_opts())


def main() -> int:
    """`python -m pyflannel_lab.peers`: where the peers are, or one line saying how to get them.

    Exit status 1 when they are missing; 3 when they are missing and PYFLANNEL_INTEROP=skip
    asks to go on without the tier (the line is still printed: never a silent pass).
    """
    try:
        peers = locate()
    except PeersMissingError as exc:
        if os.environ.get("PYFLANNEL_INTEROP") == "skip":
            print(f"interop tier NOT RUN (PYFLANNEL_INTEROP=skip): {exc}")
            return 3
        print(f"interop tier: {exc}")
        return 1
    print(f"interop tier: flanneld {VERSION} {peers.flanneld}, {peers.mk_docker_opts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
