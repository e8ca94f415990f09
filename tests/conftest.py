import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import fixtures  # noqa: E402


@pytest.fixture(scope="session")
def language_table_dir(tmp_path_factory) -> str:
    """The hand-built Language Table release (5 episodes × 25 steps, 3 planted defects), written once."""
    return fixtures.write_language_table(str(tmp_path_factory.mktemp("language_table_release")))
