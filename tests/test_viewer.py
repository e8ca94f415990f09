"""`unisim view` (shards/view.py, shards/viewer.html, unisim/cli/view.py): the data side read directly — the same
answers from a remote (memory://) copy as from disk, only the shards a page shows read, the reader's integrity errors —
and the page driven in a real headless browser, Playwright with Debian's Chromium as in tests/test_playground.py:
counts equal to the manifest's and `unisim inspect`'s, a record's frames on the canvas equal to the reader's decoded
frames, its plotted controls equal to the tokenizer's decoded tokens, the filters by source, text and rejection
reason, and a missing or truncated shard shown as the reader's error (issue 35).

    UNISIM_VIEWER_SCREENSHOT=docs/viewer.png .venv/bin/python -m pytest -q tests/test_viewer.py -k browser

rewrites the documentation's screenshot (docs/usage.md) from the page as the browser test shows it."""

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import fsspec
import numpy as np
import pytest

from unisim.cli.view import serve_viewer
from unisim.pipelines.inspect import summarize
from unisim.samples.fixtures.language_table import copy_tree
from unisim.schemas.controls import ControlTokenizer
from unisim.shards import reader
from unisim.shards.view import Viewer

CHROMIUM = os.environ.get("UNISIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REMOTE = "memory://viewer-test/clips"  # the tests' stand-in for gs:// (tests/memfs.py)
BROKEN_SHARD = "records-00000-of-00003.array_record"  # holds the fixture's first records
SCREEN = """() => { const c = document.getElementById("screen");
                    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                    let s = "";
                    for (let i = 0; i < d.length; i += 0x8000) {
                      s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
                    }
                    return [c.height, c.width, btoa(s)]; }"""
PLOTTED = """() => Array.from(document.querySelectorAll("#plot polyline.decoded"),
                              (line) => [line.dataset.name, JSON.parse(line.dataset.values),
                                         line.getAttribute("points").split(" ").length])"""


@pytest.fixture(scope="module")
def clips(language_table_clips):
    manifest = reader.read_manifest(language_table_clips)
    assert manifest.rejected and len(manifest.rejected_reasons) > 1, "the fixture should hold rejections"
    return language_table_clips


@pytest.fixture(scope="module")
def remote(clips):
    copy_tree(clips, REMOTE)
    yield REMOTE
    fsspec.filesystem("memory").rm(REMOTE.removeprefix("memory://"), recursive=True)


@pytest.fixture(scope="module")
def broken(clips, tmp_path_factory):
    """Two copies of the fixture: one without its first shard, one with that shard cut short."""
    root = tmp_path_factory.mktemp("broken")
    missing, truncated = str(root / "missing"), str(root / "truncated")
    for copy in (missing, truncated):
        shutil.copytree(clips, copy)
    os.remove(os.path.join(missing, BROKEN_SHARD))
    shard = os.path.join(truncated, BROKEN_SHARD)
    os.truncate(shard, os.path.getsize(shard) - 1000)
    return missing, truncated


@pytest.fixture(scope="module")
def decoded(clips):
    """The fixture's records in order, with their frames as the reader decodes them."""
    out = []
    for record in reader.iter_records(clips):
        size = (record.height, record.width)
        out.append((record, reader.decode_resized(record.frames, size, size)))
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium; `make test` does) or "
                    "point UNISIM_CHROMIUM at one")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def serving():
    """serving(directories) → a started viewer's URL; stopped at the test's end."""
    started = []

    def start(directories):
        server, viewer = serve_viewer(directories, port=0)
        started.append((server, viewer))
        return server.url

    yield start
    for server, viewer in started:
        server.stop()
        viewer.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=30_000)
    return page, errors


def _canvas(page) -> np.ndarray:
    height, width, rgba = page.evaluate(SCREEN)
    return np.frombuffer(base64.b64decode(rgba), np.uint8).reshape(height, width, 4)[..., :3]


# ------------------------------------------------------------------------------------------ the data side, directly

def test_the_viewer_reads_what_the_reader_reads(clips, decoded):
    manifest = reader.read_manifest(clips)
    viewer = Viewer([clips])
    source = viewer.summary()["sources"][0]
    assert (source["records"], source["shards"], source["rejected"], source["rejected_reasons"]) == (
        manifest.records, len(manifest.shards), manifest.rejected, manifest.rejected_reasons)
    assert source["controls"]["names"] == list(manifest.control_stats.names) and source["controls"]["units"] is None
    assert source["text_encoder"]["fingerprint"] == manifest.text_encoder.fingerprint

    page = viewer.records(limit=3)
    assert [r["key"] for r in page["records"]] == [r.key for r, _ in decoded[:3]] and page["next"] == 3
    rest = viewer.records(start=3, limit=50)
    assert [r["key"] for r in rest["records"]] == [r.key for r, _ in decoded[3:]] and rest["next"] is None
    first = page["records"][0]
    record, frames = decoded[0]
    assert (first["episode_id"], first["clip_index"], first["source_file"]) == (
        record.episode_id, record.clip_index, record.source_file)
    tokenizer = ControlTokenizer(manifest.control_stats)
    np.testing.assert_array_equal(np.asarray(first["controls"]["decoded"], np.float32).T,
                                  tokenizer.decode(record.control_tokens))
    np.testing.assert_array_equal(viewer.frames(0, 0), frames)

    block = record.text.split()[-4]  # "push the block N to the left": the block's number
    matching = [r.key for r, _ in decoded if f"block {block}" in r.text]
    found = viewer.records(text=f"BLOCK {block}")
    assert [r["key"] for r in found["records"]] == matching and found["next"] is None and 0 < len(matching) < 5

    dead = list(reader.iter_dead_letter(clips))
    groups = viewer.rejections()
    assert {g["reason"]: g["count"] for g in groups["reasons"]} == manifest.rejected_reasons
    for group in groups["reasons"]:
        assert [e["key"] for e in group["examples"]] == [r.key for r in dead if r.reason == group["reason"]][:3]
    one = viewer.rejections(reason="undecodable_image", examples=1)
    assert [(g["reason"], g["count"], len(g["examples"])) for g in one["reasons"]] == [("undecodable_image", 2, 1)]


def test_a_remote_copy_reads_the_same_as_the_disk(clips, remote):
    local, far = Viewer([clips]), Viewer([remote])
    try:
        strip = lambda summary: [{k: v for k, v in s.items() if k != "directory"} for s in summary["sources"]]  # noqa: E731
        assert strip(far.summary()) == strip(local.summary())
        assert far.records(limit=50) == local.records(limit=50)
        assert far.rejections() == local.rejections()
        np.testing.assert_array_equal(far.frames(0, 4), local.frames(0, 4))
    finally:
        far.close()


def test_a_page_reads_only_the_shards_it_shows_and_a_broken_one_is_the_readers_error(clips, broken, decoded):
    missing, truncated = broken
    viewer = Viewer([missing])  # opens: only the manifest is read
    assert viewer.summary()["sources"][0]["records"] == len(decoded)
    assert [r["key"] for r in viewer.records(start=2, limit=50)["records"]] == [r.key for r, _ in decoded[2:]]
    with pytest.raises(reader.ShardIntegrityError, match=f"shard {BROKEN_SHARD} is missing"):
        viewer.records()
    with pytest.raises(reader.ShardIntegrityError, match=f"shard {BROKEN_SHARD} holds .* bytes, the manifest recorded"):
        Viewer([truncated]).frames(0, 0)


# ----------------------------------------------------------------------------------------------- the page, in a browser

def test_the_page_in_a_browser_shows_counts_plays_frames_and_plots_controls(clips, decoded, browser, serving):
    manifest, inspected = reader.read_manifest(clips), summarize(clips)
    page, errors = _open(browser, serving([clips]))
    row = page.inner_text("[data-testid=source-0]").split("\t")
    # source, records, source episodes, shards, rejected: as the manifest and `unisim inspect` count them
    assert [int(v) for v in row[1:5]] == [inspected["records"], inspected["source_episodes"], inspected["shards"],
                                          inspected["rejected"]] == [manifest.records, manifest.source_episodes,
                                                                     len(manifest.shards), manifest.rejected]
    assert f"{manifest.frame_height}×{manifest.frame_width}" in row[6] and manifest.text_encoder.path in row[9]
    assert page.inner_text("[data-testid=record-count]") == f"records 1–{len(decoded)} of {len(decoded)}"
    assert page.inner_text("[data-testid=rejection-count]").startswith(f"{manifest.rejected} rejections")
    assert page.locator("[data-testid=reason-group]").count() == len(manifest.rejected_reasons)

    record, frames = next((r, f) for r, f in decoded if r.context_frames)  # one with history frames to mark
    index = [r.key for r, _ in decoded].index(record.key)
    page.click(f"[data-testid=record][data-key='{record.key}']")
    page.wait_for_function(f"document.body.dataset.record === '0:{index}' && document.body.dataset.frames")
    page.wait_for_function("Number(document.body.dataset.drawn) >= 4", timeout=10_000)  # playing at its rate
    assert page.inner_text("[data-testid=about-key]").endswith(record.key)
    assert record.source_file in page.inner_text("[data-testid=about-source-file]")
    if os.environ.get("UNISIM_VIEWER_SCREENSHOT"):
        _screenshot(page, os.environ["UNISIM_VIEWER_SCREENSHOT"])
    cells = page.locator("[data-testid=frame-cell]")
    assert cells.count() == record.num_frames
    assert page.locator("[data-testid=frame-cell].history").count() == record.context_frames
    for i in range(record.num_frames):
        cells.nth(i).click()  # stops playing and shows frame i
        np.testing.assert_array_equal(_canvas(page), frames[i])
        role = "history" if i < record.context_frames else "target"
        assert page.inner_text("[data-testid=frame-label]").startswith(f"frame {i + 1}/{record.num_frames} · {role}")

    expected = ControlTokenizer(manifest.control_stats).decode(record.control_tokens)
    plotted = page.evaluate(PLOTTED)
    assert [name for name, _, _ in plotted] == list(manifest.control_stats.names)
    for d, (_, values, points) in enumerate(plotted):
        np.testing.assert_array_equal(np.asarray(values, np.float32), expected[:, d])
        assert points == record.num_frames

    block = record.text.split()[-4]
    matching = sum(f"block {block}" in r.text for r, _ in decoded)
    page.fill("[data-testid=text]", f"block {block}")
    page.click("[data-testid=apply]")
    page.wait_for_function(f"document.body.dataset.matches === '{matching}'")
    assert page.inner_text("[data-testid=record-count]").startswith(f"{matching} of {len(decoded)} records match")
    assert page.locator("[data-testid=record]").count() == matching

    reason = max(manifest.rejected_reasons, key=manifest.rejected_reasons.get)
    page.select_option("[data-testid=reason]", reason)
    page.wait_for_function(f"document.body.dataset.rejections === '{manifest.rejected_reasons[reason]}'")
    assert page.inner_text("[data-testid=rejection-count]").startswith(
        f"{manifest.rejected_reasons[reason]} rejections for {reason}")
    assert page.locator("[data-testid=reason-group]").count() == 1
    page.close()
    assert not errors, errors


def test_the_source_filter_and_a_remote_source_in_a_browser(clips, remote, decoded, browser, serving):
    page, errors = _open(browser, serving([clips, remote]))
    assert page.inner_text("[data-testid=record-count]").endswith(f"of {2 * len(decoded)}")
    page.select_option("[data-testid=source]", "1")
    page.wait_for_function(f"document.body.dataset.total === '{len(decoded)}' && document.body.dataset.frames")
    assert page.inner_text("[data-testid=record-count]") == f"records 1–{len(decoded)} of {len(decoded)}"
    assert page.get_attribute("[data-testid=source-1]", "class") == "selected"
    page.locator("[data-testid=frame-cell]").first.click()
    np.testing.assert_array_equal(_canvas(page), decoded[0][1][0])  # the remote copy's first record, its first frame
    page.close()
    assert not errors, errors


def test_a_missing_or_truncated_shard_shows_the_readers_error_in_a_browser(broken, browser, serving):
    page, errors = _open(browser, serving(list(broken)))
    assert page.evaluate("document.body.dataset.state") == "error"
    assert f"shard {BROKEN_SHARD} is missing" in page.inner_text("[data-testid=records-error]")
    assert page.locator("[data-testid=record]").count() == 0 and page.is_hidden("#player")
    page.select_option("[data-testid=source]", "1")
    page.wait_for_function("document.body.dataset.state === 'error' && "
                           "document.getElementById('records-error').textContent.includes('bytes')")
    assert "the manifest recorded" in page.inner_text("[data-testid=records-error]")
    page.close()
    assert not errors, errors


def test_with_tokens_every_route_needs_one_and_the_page_carries_it(clips, browser):
    from unisim.simulator.serving.web import Credentials

    token = "viewer-token-" + "v" * 20
    server, viewer = serve_viewer([clips], port=0, credentials=Credentials({token: "me"}))
    try:
        for path in ("/", "/api/summary", "/api/records", "/api/sources/0/records/0/frames"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.url + path)
            assert refused.value.code == 401 and json.load(refused.value) == {"error": "unauthenticated"}
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/?access_token={token}")
        page.wait_for_function("document.body.dataset.frames", timeout=30_000)  # the API took the page's token
        assert page.evaluate("document.body.dataset.state") != "error" and token not in page.url
        page.close()
        assert not errors, errors
    finally:
        server.stop()
        viewer.close()


def _screenshot(page, path: str) -> None:
    """The page as it is, palette-quantized so that the documentation's image stays small."""
    from PIL import Image

    page.screenshot(path=path, full_page=True)
    Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


# --------------------------------------------------------------------------------------------------------- the command

def test_cli_view_serves_until_interrupted_and_refuses_a_directory_that_is_no_conversion(clips, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    refused = subprocess.run([sys.executable, "-m", "unisim.cli", "view", str(tmp_path)], cwd=root,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "no manifest.json" in refused.stderr
    process = subprocess.Popen([sys.executable, "-m", "unisim.cli", "view", clips, "--port", "0"], cwd=root,
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("unisim view: open http://127.0.0.1:"), line
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/summary") as answer:
            assert json.load(answer)["totals"]["records"] == reader.read_manifest(clips).records
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url + "api/sources/0/records/99/frames")
        assert error.value.code == 404 and "has no record 99" in json.load(error.value)["error"]
    finally:
        process.send_signal(2)
        assert process.wait(timeout=60) == 0
