"""The documentation: a short README with the two commands, the command reference generated from the options'
declarations (and identical to the file in docs/), the MkDocs site building with --strict, and the commands the pages
show: every shell block in docs/ either runs here, on a stand-in for the demo's output, or says why it does not.

The marking convention: an HTML comment on the line before the fence, `<!-- not run here: REASON -->` (MkDocs passes it
through as a comment; readers never see it). An unmarked block is run by this file, so it may hold only cheap
`.venv/bin/unisim` commands (`adapters`, `inspect`, `--help`) that read what the stand-in provides."""

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SHELL = {"bash", "sh", "console", "shell"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
NOT_RUN = re.compile(r"^\s*<!-- not run here: (.+?) -->\s*$")

# What `make demo` writes under demo-output/ (unisim/demo.py; tests/test_evaluate.py runs it at smoke size).
DEMO_OUTPUT = ("report.html", "eval.json", "mixture.py", "start.png", "rollout-text.gif", "rollout-controls.gif",
               "tiny-t5", "sources/tabletop/language_table_tabletop_sim", "sources/tabletop-heldout",
               "sources/activity-video", "sources/image-text", "clips/tabletop", "clips/tabletop-heldout",
               "clips/activity-video", "clips/image-text", "runs/base", "runs/base-1frame")
# The runnable blocks' stand-in for it: the demo's tabletop clips are Language Table-format episodes converted by the
# language_table adapter; the session fixture `language_table_clips` is such a conversion (5 episodes, 3 planted
# defects), already made for the other tests.
STAND_INS = {"clips/tabletop": "language_table_clips"}
CHEAP = {"adapters", "inspect"}  # subcommands cheap enough to run (under 2 s each); any command with --help is too
OUTPUT_FLAGS = {"--output", "--workdir", "--preview", "--report"}


@dataclass
class Block:
    page: str
    line: int
    indent: str
    reason: str | None  # None: runnable
    text: str

    def commands(self) -> list[str]:
        """The block's commands: continuation lines joined, blank lines and comments left out."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]

    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def shell_blocks() -> list[Block]:
    """Every fenced shell block (```bash, sh, console, shell) in docs/*.md, with its marker's reason."""
    blocks = []
    for page in sorted(os.listdir(DOCS)):
        if not page.endswith(".md"):
            continue
        lines = open(os.path.join(DOCS, page), encoding="utf-8").read().splitlines()
        i = 0
        while i < len(lines):
            opening = FENCE.match(lines[i])
            if not opening:
                i += 1
                continue
            fence = opening.group(2)
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines))
            if opening.group(3) in SHELL:
                before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                marker = NOT_RUN.match(before)
                blocks.append(Block(page, i + 1, opening.group(1), marker.group(1).strip() if marker else None,
                                    "\n".join(line[len(opening.group(1)):] for line in lines[i + 1:end])))
            i = end + 1
    return blocks


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


def test_every_page_is_titled_as_its_menu_entry():
    import yaml

    config = yaml.load(open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8"), Loader=yaml.BaseLoader)
    pages = {page: label for entry in config["nav"] for label, page in entry.items()}
    assert set(pages) == {p for p in os.listdir(DOCS) if p.endswith(".md")}, "a page is missing from the menu"
    for page, label in pages.items():
        title = open(os.path.join(DOCS, page), encoding="utf-8").readline().rstrip("\n")
        assert title == f"# {label}", (page, title, label)


def test_every_command_block_in_the_docs_is_run_or_says_why_not():
    """Fast: an unmarked shell block holds only cheap unisim commands reading what the stand-in provides, so that
    the next test can run it; a marked one says why it is not run. No fence sits inside a list item (Python-Markdown
    would render it as inline text)."""
    blocks = shell_blocks()
    assert [b for b in blocks if b.reason is None] and [b for b in blocks if b.reason], "the parser found no blocks"
    for block in blocks:
        assert block.indent == "", f"{block.where()}: a fenced block inside a list item does not render"
        if block.reason is not None:
            assert len(block.reason) >= 10, f"{block.where()}: say why it is not run, not just that"
            assert "--" not in block.reason, f"{block.where()}: an HTML comment may not hold '--'"
            continue
        for command in block.commands():
            words = shlex.split(command, comments=True)
            assert words[0] == ".venv/bin/unisim", f"{block.where()}: {command!r} is not a unisim command: mark it"
            assert words[1] in CHEAP or "--help" in words, f"{block.where()}: {command!r} is not cheap: mark it"
            for previous, word in zip(words, words[1:]):
                if word.startswith("demo-output/"):
                    path = word.removeprefix("demo-output/")
                    new_file = previous in OUTPUT_FLAGS and "/" not in path
                    assert path in STAND_INS or new_file, f"{block.where()}: the stand-in has no {word}"


def test_the_demo_output_paths_the_pages_name_exist_after_the_demo():
    """Every demo-output/ path in docs/ is one `make demo` writes, or one a documented command writes there."""
    demo_source = open(os.path.join(ROOT, "unisim", "demo.py"), encoding="utf-8").read()
    for literal in ("sources", "clips", "runs", "tiny-t5", "tabletop", "tabletop-heldout", "activity-video",
                    "image-text", "base", "base-1frame", "mixture.py", "start.png", "eval.json", "report.html"):
        assert f'"{literal}"' in demo_source, f"unisim/demo.py no longer writes {literal}: update DEMO_OUTPUT"
    created = set()
    for block in shell_blocks():
        for command in block.commands():
            words = command.split()
            created |= {w.removeprefix("demo-output/") for p, w in zip(words, words[1:])
                        if p in OUTPUT_FLAGS and w.startswith("demo-output/")}
    for page in sorted(os.listdir(DOCS)):
        if page.endswith(".md"):
            text = open(os.path.join(DOCS, page), encoding="utf-8").read()
            for mention in re.findall(r"demo-output/([\w./-]*\w)", text):
                path = mention.split(":")[0]
                known = any(path == p or path.startswith(p + "/") for p in (*DEMO_OUTPUT, *created))
                assert known, f"docs/{page}: demo-output/{path} is neither written by the demo nor by a command"


def test_the_runnable_command_blocks_run_on_a_demo_like_output(language_table_clips, tmp_path):
    """Every unmarked shell block of docs/, run as written with demo-output/ standing for a tree of test fixtures
    (the fixtures are the session's, shared with the other tests: the commands themselves take about 10 s)."""
    fixtures = {"language_table_clips": language_table_clips}
    demo = tmp_path / "demo-output"
    for path, fixture in STAND_INS.items():
        (demo / path).parent.mkdir(parents=True, exist_ok=True)
        (demo / path).symlink_to(fixtures[fixture])
    ran, began = [], time.monotonic()
    for block in shell_blocks():
        if block.reason is not None:
            continue
        for command in block.commands():
            words = [w.replace("demo-output/", f"{demo}/") for w in shlex.split(command, comments=True)]
            result = subprocess.run([sys.executable, "-m", "unisim.cli", *words[1:]], capture_output=True, text=True,
                                    cwd=ROOT, timeout=300)
            assert result.returncode == 0, (block.where(), command, result.stderr[-3000:])
            ran.append(command)
            for previous, word in zip(words, words[1:]):
                if previous in OUTPUT_FLAGS:
                    assert os.path.exists(word), (block.where(), command, f"wrote no {word}")
    assert ran
    print(f"{len(ran)} documented commands ran in {time.monotonic() - began:.1f} s")
