"""An engine for the servers under test (small upload limit, so 413 is cheap to provoke)."""

from __future__ import annotations

import pytest

from tests.conftest import make_data_dir, make_engine


@pytest.fixture(scope="module")
def server_engine(tmp_path_factory, tiny_models):
    engine = make_engine(
        make_data_dir(tmp_path_factory.mktemp("server-data"), tiny_models, warm=True), max_upload_bytes=300_000
    )
    engine.load()
    return engine
