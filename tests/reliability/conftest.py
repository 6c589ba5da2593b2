"""One set of legitimate run folders, cache and data folders for every reliability test (built once)."""

from __future__ import annotations

import pytest

from tests.reliability.faults import Base, build_base


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Base:
    return build_base(tmp_path_factory.mktemp("base"))
