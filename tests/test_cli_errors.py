"""unisim/cli: a user's mistake is one line (exit 2), a bug is a traceback and a request to report it (exit 1),
and --debug / UNISIM_DEBUG shows the traceback of a user's mistake too."""

import pytest

from unisim import cli
from unisim.cli import main


def test_a_users_mistake_is_one_line(tmp_path, capsys):
    status = main(["train", "--config", "trainer/configs/tiny.py", "--workdir", str(tmp_path / "run"),
                   "--mixture", f"{tmp_path / 'nowhere'}:1", "--steps", "1"])
    err = capsys.readouterr().err
    assert status == 2 and "unisim train: error:" in err and "no manifest.json" in err
    expected = f"unisim train: error: {tmp_path / 'nowhere'}: no manifest.json (not a converted directory, or an " \
               "unfinished run)"
    assert "Traceback" not in err and [line for line in err.splitlines() if "error" in line] == [expected]


def test_an_unknown_dataset_is_a_users_mistake_not_a_key_error(tmp_path, capsys):
    status = main(["convert", "--dataset", "nope", "--source", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and "unknown dataset 'nope'" in err and "Traceback" not in err


@pytest.mark.parametrize("error", [KeyError("shard_7"), TypeError("unsupported operand"), ZeroDivisionError()])
def test_a_bug_keeps_its_traceback_and_asks_for_a_report(error, monkeypatch, capsys):
    from unisim.cli import adapters

    def broken(args, rest):
        raise error

    monkeypatch.setattr(adapters, "run", broken)
    assert main(["adapters"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"internal error ({type(error).__name__})" in err
    assert "Reporting a bug" in err


def test_a_value_error_from_a_library_is_a_bug_but_the_projects_own_is_the_users(monkeypatch, capsys):
    import numpy as np

    from unisim.cli import adapters

    monkeypatch.setattr(adapters, "run", lambda args, rest: np.zeros(3).reshape(2, 2))  # numpy raises
    assert main(["adapters"]) == 1 and "internal error (ValueError)" in capsys.readouterr().err

    from unisim.pipelines.embed import EncoderSettings

    monkeypatch.setattr(adapters, "run", lambda args, rest: EncoderSettings("t5", batch_size=0))  # unisim raises
    assert main(["adapters"]) == 2
    assert capsys.readouterr().err.strip() == "unisim adapters: error: text batch_size must be >= 1"


def test_debug_shows_the_traceback_of_a_users_mistake(tmp_path, monkeypatch, capsys):
    argv = ["convert", "--dataset", "nope", "--source", str(tmp_path), "--output", str(tmp_path / "o")]
    assert main([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert main(argv) == 2
    assert "UnknownDatasetError" in capsys.readouterr().err
