"""Fixtures for the namespace tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyflannel_lab import Lab

# ---- lab fixtures (pyflannel_lab) ----------------------------------------------------------

LabFactory = Callable[..., Lab]


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Factory: lab_factory(**Lab kwargs, etcd=False) -> a Lab that is up, with its own prefix.

    Every lab gets a fresh prefix (pft + 4 hex digits) so parallel runs never collide; all of
    them are taken down after the test, also when it fails.
    """
    labs: list[Lab] = []

    def build(*, etcd: bool = False, **kwargs: Any) -> Lab:
        lab = Lab(name_prefix=f"pft{secrets.token_hex(2)}", **kwargs)
        labs.append(lab)
        lab.up()
        if etcd:
            lab.start_etcd()
        return lab

    try:
        yield build
    finally:
        for lab in labs:
            lab.down()


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_factory: LabFactory) -> Lab:
    """A lab that is up: 3 hosts, no overlay subnets yet (the agent leases them), no etcd.

    Override with indirect parametrization, e.g.
    `@pytest.mark.parametrize("lab", [{"overlay_subnets": [...], "etcd": True}], indirect=True)`.
    """
    return lab_factory(**getattr(request, "param", {}))
