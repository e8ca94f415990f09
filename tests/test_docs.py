"""The documentation: a short README with the two commands, the command reference generated from the options'
declarations (and identical to the file in docs/), and the MkDocs site building with --strict."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    assert len(lines) <= 150, len(lines)
    head = "\n".join(lines[:6])
    assert "make demo" in head and "make test" in head


def test_the_command_reference_is_generated_from_the_declarations():
    from unisim.cli import reference

    generated = reference.render()
    on_disk = open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8").read()
    assert on_disk == generated, "docs/cli.md is stale: run `python -m unisim.cli.reference > docs/cli.md`"
    for flag in ("--text_encoder PATH", "--records_per_shard", "--config FILE.py", "--super_resolution DIR …",
                 "--sampler {ddim,ancestral}"):
        assert flag in generated, flag


def test_every_command_has_help(capsys):
    from unisim.cli import COMMANDS, command_parser

    for name in COMMANDS:
        parser, _ = command_parser(name)
        for action in parser._actions:
            assert action.help, f"unisim {name}: {action.option_strings or action.dest} has no help"


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(tmp_path / "site" / "cli" / "index.html")
