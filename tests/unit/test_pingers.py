"""gap_of: the longest run of lost replies in `ping -n` output (iputils)."""

from __future__ import annotations

import pytest

from pyflannel_lab.pingers import gap_of


def _output(received: list[int], sent: int) -> str:
    lines = [f"64 bytes from 10.5.2.2: icmp_seq={seq} ttl=62 time=0.1 ms" for seq in received]
    lines.append("From 10.5.1.1 icmp_seq=4 Destination Net Unreachable")
    lines += ["", "--- 10.5.2.2 ping statistics ---", f"{sent} packets transmitted, ..."]
    return "\n".join(lines)


def test_longest_run_and_trailing() -> None:
    gap = gap_of(_output([1, 2, 3, 7, 8, 10], sent=11), interval=0.1)
    assert (gap.sent, gap.longest, gap.trailing) == (11, 3, 1)  # 4-6 lost; 9 and 11 alone
    assert gap.seconds == pytest.approx(0.3)


def test_no_loss() -> None:
    gap = gap_of(_output(list(range(1, 21)), sent=20), interval=0.1)
    assert (gap.longest, gap.trailing) == (0, 0)


def test_a_pinger_without_summary_died() -> None:
    with pytest.raises(AssertionError, match="died before it was stopped"):
        gap_of("64 bytes from 10.5.2.2: icmp_seq=1 ttl=62 time=0.1 ms\n", interval=0.1)
