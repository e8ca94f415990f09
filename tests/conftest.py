import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import fixtures  # noqa: E402


@pytest.fixture(scope="session")
def language_table_dir(tmp_path_factory) -> str:
    """The hand-built Language Table release (5 episodes × 25 steps, 3 planted defects), written once."""
    return fixtures.write_language_table(str(tmp_path_factory.mktemp("language_table_release")))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> str:
    """A tiny randomly initialised T5 encoder checkpoint (transformers format), vocabulary trained in the test."""
    from unisim.samples import tiny_t5

    corpus = [f"push the block {e} to the left" for e in range(8)] + ["language_table: push the block to the left"]
    return tiny_t5.write_tiny_t5(str(tmp_path_factory.mktemp("tiny_t5")), corpus=corpus)
