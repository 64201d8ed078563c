"""bpf(2) through ctypes: maps (create, update, delete, lookup, iterate) and program loading.

Only the commands the fast path uses. Errors come back as `BpfError` with errno and, for a
program the verifier refused, the verifier's last lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2

BPF_PROG_TYPE_SCHED_CLS = 3

BPF_ANY = 0

_SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) command failed."""


class _MapCreate(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
    ]


class _MapElem(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # also next_key
        ("flags", ctypes.c_uint64),
    ]


class _ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


class _TestRun(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
    ]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    number = _SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise BpfError(0, f"bpf(2) syscall number unknown on {platform.machine()}")
    result = _libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return int(result)


def _addr(buffer: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buffer)


class Map:
    """A BPF map with fixed-size byte keys and values; closed with close() or by the kernel
    when nothing (no program, no descriptor) refers to it any more."""

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int, entries: int):
        attr = _MapCreate(map_type, key_size, value_size, entries, 0, 0, 0, name.encode()[:15])
        self.fd = _bpf(BPF_MAP_CREATE, attr, f"create map {name}")
        self.name, self.key_size, self.value_size = name, key_size, value_size

    def _elem(self, key: bytes, value: ctypes.Array[ctypes.c_char] | None, flags: int = 0):
        kbuf = ctypes.create_string_buffer(key, self.key_size)
        attr = _MapElem(self.fd, 0, _addr(kbuf), _addr(value) if value is not None else 0, flags)
        return attr, kbuf

    def update(self, key: bytes, value: bytes) -> None:
        vbuf = ctypes.create_string_buffer(value, self.value_size)
        attr, _k = self._elem(key, vbuf, BPF_ANY)
        _bpf(BPF_MAP_UPDATE_ELEM, attr, f"update map {self.name}")

    def delete(self, key: bytes) -> None:
        attr, _k = self._elem(key, None)
        _bpf(BPF_MAP_DELETE_ELEM, attr, f"delete from map {self.name}")

    def lookup(self, key: bytes) -> bytes | None:
        vbuf = ctypes.create_string_buffer(self.value_size)
        attr, _k = self._elem(key, vbuf)
        try:
            _bpf(BPF_MAP_LOOKUP_ELEM, attr, f"look up map {self.name}")
        except BpfError as exc:
            if exc.errno == 2:  # ENOENT
                return None
            raise
        return vbuf.raw

    def keys(self) -> list[bytes]:
        found: list[bytes] = []
        nbuf = ctypes.create_string_buffer(self.key_size)
        attr = _MapElem(self.fd, 0, 0, _addr(nbuf), 0)  # key 0: start from the first
        while True:
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, attr, f"iterate map {self.name}")
            except BpfError as exc:
                if exc.errno == 2:
                    return found
                raise
            found.append(nbuf.raw)
            kbuf = ctypes.create_string_buffer(nbuf.raw, self.key_size)
            attr = _MapElem(self.fd, 0, _addr(kbuf), _addr(nbuf), 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load_program(name: str, code: bytes, prog_type: int = BPF_PROG_TYPE_SCHED_CLS) -> int:
    """Load `code` (encoded instructions); returns the program's descriptor."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")  # the skb helpers used are GPL-only
    log = ctypes.create_string_buffer(1 << 16)
    attr = _ProgLoad(
        prog_type,
        len(code) // 8,
        _addr(insns),
        _addr(license_),
        1,
        len(log),
        _addr(log),
        0,
        0,
        name.encode()[:15],
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr, f"load program {name}")
    except BpfError as exc:
        lines = log.value.decode(errors="replace").strip().splitlines()
        detail = " | ".join(lines[-3:]) if lines else ""
        raise BpfError(exc.errno, f"{exc.strerror}{': ' + detail if detail else ''}") from None


def test_run(prog_fd: int, packet: bytes) -> tuple[int, bytes]:
    """Run a loaded program once on `packet` (BPF_PROG_TEST_RUN): (return code, packet after)."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    attr = _TestRun(prog_fd, 0, len(packet), len(data_out), _addr(data_in), _addr(data_out), 1, 0)
    _bpf(BPF_PROG_TEST_RUN, attr, "test-run program")
    return attr.retval, data_out.raw[: attr.data_size_out]


def close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
