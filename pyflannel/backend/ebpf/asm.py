"""A minimal eBPF assembler: the instructions the fast-path programs use, with jump labels.

Each method appends one instruction (ld_imm64: two); `jump` targets are label names resolved by
`assemble`. Registers: r0 return value, r1-r5 helper arguments (clobbered by calls), r6-r9
callee-saved, r10 the read-only frame pointer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# instruction classes, sizes, modes, operations (linux/bpf_common.h, linux/bpf.h)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
SIZE = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
ATOMIC_ADD = 0x00
K, X = 0x00, 0x08
ALU_OPS = {
    "add": 0x00, "sub": 0x10, "or": 0x40, "and": 0x50, "lsh": 0x60, "rsh": 0x70,
    "xor": 0xA0, "mov": 0xB0,
}  # fmt: skip
JUMP_OPS = {
    "ja": 0x00, "eq": 0x10, "gt": 0x20, "ge": 0x30, "set": 0x40, "ne": 0x50,
    "lt": 0xA0, "le": 0xB0,
}  # fmt: skip
CALL, EXIT, END, TO_BE = 0x80, 0x90, 0xD0, 0x08
PSEUDO_MAP_FD = 1

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)


def _s32(value: int) -> int:
    """Immediates are signed 32-bit; accept unsigned constants such as masks."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass
class Program:
    insns: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    fixups: dict[int, str] = field(default_factory=dict)  # insn index -> label

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.insns.append((code, dst, src, off, _s32(imm)))

    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name} defined twice")
        self.labels[name] = len(self.insns)

    # ALU: 64-bit unless wide=False; operand an int (immediate) or a register given as ("r", n)
    def alu(self, op: str, dst: int, imm: int | None = None, src: int | None = None,
            wide: bool = True) -> None:  # fmt: skip
        cls = ALU64 if wide else ALU
        if src is not None:
            self._emit(cls | ALU_OPS[op] | X, dst, src)
        else:
            self._emit(cls | ALU_OPS[op] | K, dst, imm=imm or 0)

    def mov(self, dst: int, imm: int | None = None, src: int | None = None) -> None:
        self.alu("mov", dst, imm, src)

    def to_be(self, dst: int, bits: int) -> None:
        """Host (little-endian) to network order of the low `bits` bits."""
        self._emit(ALU | END | TO_BE, dst, imm=bits)

    def load(self, dst: int, base: int, off: int, size: int) -> None:
        self._emit(LDX | MEM | SIZE[size], dst, base, off)

    def store(self, base: int, off: int, src: int, size: int) -> None:
        self._emit(STX | MEM | SIZE[size], base, src, off)

    def store_imm(self, base: int, off: int, imm: int, size: int) -> None:
        self._emit(ST | MEM | SIZE[size], base, 0, off, imm)

    def atomic_add(self, base: int, off: int, src: int) -> None:
        """*(u64 *)(base + off) += src, atomically (counters shared by all CPUs)."""
        self._emit(STX | ATOMIC | SIZE[8], base, src, off, ATOMIC_ADD)

    def load_map_fd(self, dst: int, fd: int) -> None:
        self._emit(LD | IMM | SIZE[8], dst, PSEUDO_MAP_FD, 0, fd)
        self._emit(0, 0, 0, 0, 0)

    def jump(self, op: str, target: str, dst: int = 0, imm: int | None = None, *,
             src: int | None = None, wide: bool = False) -> None:  # fmt: skip
        """Conditional jumps compare 32 bits unless wide (pointers): packet fields are u32 or
        smaller, and a 64-bit compare would sign-extend an immediate such as 0xffff0000."""
        self.fixups[len(self.insns)] = target
        cls = JMP if wide else JMP32
        if op == "ja":
            self._emit(JMP | JUMP_OPS["ja"])
        elif src is not None:
            self._emit(cls | JUMP_OPS[op] | X, dst, src)
        else:
            self._emit(cls | JUMP_OPS[op] | K, dst, imm=imm or 0)

    def call(self, helper: int) -> None:
        self._emit(JMP | CALL, imm=helper)

    def exit(self) -> None:
        self._emit(JMP | EXIT)

    def ret(self, value: int) -> None:
        self.mov(R0, value)
        self.exit()

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, dst, src, offset, imm) in enumerate(self.insns):
            jump_to = offset
            if index in self.fixups:
                target = self.labels.get(self.fixups[index])
                if target is None:
                    raise ValueError(f"jump to undefined label {self.fixups[index]}")
                jump_to = target - index - 1
            out += struct.pack("<BBhi", code, (src << 4) | dst, jump_to, imm)
        return bytes(out)
