"""Shared fixtures for the Python tests. Keep it small: each fixture here is used by several tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rerun_server():
    """One in-process Rerun catalog server (the reference), bound to loopback, for the whole session.

    Tests register their own datasets on it (``srv.client().create_dataset(...).register(...)``).
    """
    import rerun as rr

    with rr.server.Server(host="127.0.0.1") as srv:
        yield srv


@pytest.fixture(scope="session")
def diff_data_dir(tmp_path_factory):
    """Directory for the differential tests' generated recordings (one sub-directory per seed)."""
    return tmp_path_factory.mktemp("diff_data")
