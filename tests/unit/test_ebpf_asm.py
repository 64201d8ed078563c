"""The fast path's eBPF assembler: encodings checked against the instruction set's layout
(linux/bpf.h: code, dst_reg:4 | src_reg:4, signed 16-bit offset, signed 32-bit immediate)."""

from __future__ import annotations

import struct

import pytest

from pyflannel.backend.ebpf.asm import R0, R1, R2, R6, R10, Program


def decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack("<BBhi", code[i : i + 8])
        out.append((op, regs & 0x0F, regs >> 4, off, imm))
    return out


def test_mov_immediate_and_register() -> None:
    p = Program()
    p.mov(R0, 7)
    p.mov(R6, src=R1)
    assert decode(p.assemble()) == [(0xB7, R0, 0, 0, 7), (0xBF, R6, R1, 0, 0)]


def test_unsigned_constants_become_signed_immediates() -> None:
    p = Program()
    p.alu("and", R2, 0xFFFF0000, wide=False)
    assert decode(p.assemble()) == [(0x54, R2, 0, 0, -65536)]


def test_jumps_resolve_labels_forward_and_backward() -> None:
    p = Program()
    p.label("top")
    p.jump("eq", "end", R0, 0, wide=True)  # 64-bit compare (a pointer against NULL)
    p.jump("gt", "top", R1, 5)  # 32-bit compare (a packet field)
    p.label("end")
    p.exit()
    assert decode(p.assemble()) == [
        (0x15, R0, 0, 1, 0),
        (0x26, R1, 0, -2, 5),
        (0x95, 0, 0, 0, 0),
    ]


def test_map_descriptor_load_takes_two_slots() -> None:
    p = Program()
    p.load_map_fd(R1, 9)
    p.exit()
    assert decode(p.assemble()) == [(0x18, R1, 1, 0, 9), (0, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]


def test_memory_access_sizes() -> None:
    p = Program()
    p.load(R2, R6, 76, 4)
    p.store(R10, -4, R2, 2)
    p.store_imm(R10, -8, 1, 1)
    p.atomic_add(R0, 0, R1)
    assert decode(p.assemble()) == [
        (0x61, R2, R6, 76, 0),
        (0x6B, R10, R2, -4, 0),
        (0x72, R10, 0, -8, 1),
        (0xDB, R0, R1, 0, 0),
    ]


def test_byte_swap_to_network_order() -> None:
    p = Program()
    p.to_be(R1, 16)
    assert decode(p.assemble()) == [(0xDC, R1, 0, 0, 16)]


def test_label_mistakes_are_refused() -> None:
    p = Program()
    p.jump("ja", "nowhere")
    with pytest.raises(ValueError, match="undefined label nowhere"):
        p.assemble()
    p.label("x")
    with pytest.raises(ValueError, match="label x defined twice"):
        p.label("x")
