"""Values are checked at the edge (issue 21, item 4): bad rates, sizes, adapter-config types and mixtures end with
one line and exit 2; a full output ends with one line and no manifest; clean-up removes only what this tool wrote."""

import os

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from unisim.cli import main
from unisim.trainer import data


def _convert(source, output, *flags):
    return main(["convert", "--dataset", "language_table", "--source", source, "--output", output, *flags])


@pytest.mark.parametrize("flags, message", [
    (["--fps", "nan"], "finite number"), (["--fps", "inf"], "finite number"), (["--fps", "0"], "positive number"),
    (["--fps", "-3"], "positive number"), (["--height", "100000"], "1 to 4096 pixels a side"),
    (["--stats_sample_rate", "nan"], "finite number"),
])
def test_bad_rates_and_sizes_are_one_line_and_exit_2(language_table_dir, tmp_path, capsys, flags, message):
    try:
        status = _convert(language_table_dir, str(tmp_path / "out"), *flags)
    except SystemExit as e:  # argparse refusing the value itself
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_adapter_config_values_of_the_wrong_type_are_refused(tmp_path, capsys):
    config = tmp_path / "options.json"
    config.write_text('{"camera": [1, 2]}')
    assert main(["convert", "--dataset", "bridge", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--adapter_config", str(config)]) == 2
    assert "camera: expected int, got list" in capsys.readouterr().err
    config.write_text('{"passes": 5}')
    assert main(["convert", "--dataset", "ego4d", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--adapter_config", str(config)]) == 2
    assert "passes: expected a list or comma-separated text" in capsys.readouterr().err


@pytest.mark.parametrize("mixture, message", [
    ("MIXTURE = [('/data/a',)]", "is not (directory, weight[, name])"),
    ("MIXTURE = [('/data/a', float('inf'))]", "must be positive numbers"),
    ("MIXTURE = [('/data/a', float('nan'), 'a')]", "must be positive numbers"),
    ("MIXTURE = [('/data/a', '1')]", "is not (directory, weight[, name])"),
])
def test_mixture_files_are_checked(tmp_path, mixture, message):
    path = tmp_path / "mixture.py"
    path.write_text(mixture + "\n")
    with pytest.raises(data.MixtureError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        data.parse_mixture(str(path))
    with pytest.raises(data.MixtureError, match="must be positive numbers"):
        data.parse_mixture("/data/a:inf")


def test_only_files_this_tool_wrote_are_cleaned_up(language_table_dir, tmp_path, capsys):
    for name, make in (("manifest.json", lambda p: p.write_text('{"my": "own notes"}')),
                       (".tmp-notes", lambda p: p.mkdir())):
        output = tmp_path / name.strip(".")
        output.mkdir()
        make(output / name)
        assert _convert(language_table_dir, str(output)) == 2
        assert "not UniSim shards" in capsys.readouterr().err
        assert (output / name).exists()


class _FullFileSystem(MemoryFileSystem):
    """An object store whose disk is full: every write fails as a full disk does."""

    protocol = "fullfs"
    store: dict = {}  # its own objects: MemoryFileSystem's class-level store is shared with memory:// tests
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode or "a" in mode:
            raise OSError(28, "No space left on device", path)
        return super()._open(path, mode, **kwargs)


def test_a_full_output_ends_with_one_line_and_no_manifest(language_table_dir, capsys):
    fsspec.register_implementation("fullfs", _FullFileSystem, clobber=True)
    assert not fsspec.filesystem("fullfs").exists("/full-bucket/out")
    status = _convert(language_table_dir, "fullfs://full-bucket/out")
    err = capsys.readouterr().err
    assert status == 2 and "No space left on device" in err and "Traceback" not in err
    assert not fsspec.filesystem("fullfs").exists("/full-bucket/out/manifest.json")
