"""The in-kernel fast path of the userspace backends (udp, ipip fallback), as eBPF programs.

Written without a compiler: `asm` encodes the few instructions the programs need, `syscall`
talks to bpf(2), `programs` builds the encapsulation (tc egress on the TUN) and decapsulation
(tc ingress on the underlay) programs, `fastpath` loads and attaches them and keeps their peer
maps in step with the leases. Why not bcc or libbpf: bcc needs clang and kernel headers on
every node, libbpf is not on minimal hosts, pyroute2 attaches programs but does not load them.
"""
