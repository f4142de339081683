"""Shared fixtures for the Python tests. Keep it small: each fixture here is used by several tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def diff_data_dir(tmp_path_factory):
    """Directory for the differential tests' generated recordings (one sub-directory per seed).

    The differential tests serve these files with the reference (rerun-sdk's catalog server) in a child
    process: a Rust panic in rerun-sdk's query engine aborts the whole process.
    """
    return tmp_path_factory.mktemp("diff_data")
