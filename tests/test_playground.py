"""`unisim play` (simulator/serving/playground.py): the page driven in a real headless browser — Playwright with
Debian's Chromium (`make test` installs it; Playwright's own browser download is never used) — asserting that the frames
change after a text action and after an arrow key, that reset and the start frame choice work (issue 22)."""

import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from unisim.simulator.core import SamplerSettings, Simulator
from unisim.simulator.serving.playground import serve_playground, start_frames

CHROMIUM = os.environ.get("UNISIM_CHROMIUM", "/usr/bin/chromium")
# As root in a closed network: no sandbox, and none of Chromium's background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREEN = """() => { const c = document.getElementById("screen");
                    return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data); }"""


@pytest.fixture(scope="module")
def playground(tiny_workdirs):
    sim = Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=2), max_batch=4)
    server = serve_playground(sim, tiny_workdirs["clips"], port=0, starts=3)
    yield server
    server.stop()


def _rgb(rgba: list[int], shape) -> np.ndarray:
    return np.asarray(rgba, np.uint8).reshape(*shape, 4)[..., :3]


def test_start_frames_come_from_the_converted_clips(tiny_workdirs, playground):
    starts = start_frames(tiny_workdirs["clips"], (24, 40), 3)
    assert len(starts) == 3 and all(s["frame"].shape == (24, 40, 3) for s in starts)
    with urllib.request.urlopen(playground.url + "/play/starts") as answer:
        listing = json.load(answer)
    assert [s["name"] for s in listing["starts"]] == [s["name"] for s in starts] + ["white frames (text only)"]
    with urllib.request.urlopen(playground.url + "/") as answer:
        assert answer.headers["Content-Type"].startswith("text/html") and b"UniSim playground" in answer.read()


def test_the_page_steps_the_simulator_in_a_real_browser(tiny_workdirs, playground, tmp_path):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium; `make test` does) or "
                    "point UNISIM_CHROMIUM at one")
    starts = start_frames(tiny_workdirs["clips"], (24, 40), 3)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 620})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(playground.url + "/")
        page.wait_for_function("document.body.dataset.steps === '0'", timeout=60_000)
        start = _rgb(page.evaluate(SCREEN), (24, 40))
        np.testing.assert_array_equal(start, starts[0]["frame"])  # the first clip's frame, losslessly

        page.fill("[data-testid=text]", "push the block 1 to the left")
        page.click("[data-testid=step-text]")
        page.wait_for_function("document.body.dataset.steps === '1'", timeout=120_000)
        after_text = _rgb(page.evaluate(SCREEN), (24, 40))
        assert np.abs(after_text.astype(int) - start).mean() > 1  # new frames on the screen
        assert page.locator("#strip canvas").count() == 16  # the whole segment

        page.click("[data-testid=screen]")  # focus off the text box: arrow keys are actions
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("document.body.dataset.steps === '2'", timeout=120_000)
        after_key = _rgb(page.evaluate(SCREEN), (24, 40))
        assert np.abs(after_key.astype(int) - after_text).mean() > 1
        assert "Left" in page.inner_text("[data-testid=status]")
        page.screenshot(path=str(tmp_path / "playground.png"))

        page.select_option("[data-testid=start]", "1")  # another start frame: a new session from it
        page.wait_for_function("document.body.dataset.steps === '0'", timeout=60_000)
        np.testing.assert_array_equal(_rgb(page.evaluate(SCREEN), (24, 40)), starts[1]["frame"])
        # over the server's limit (the page's maxlength removed, as a script could): an error shown, nothing stepped
        page.evaluate("document.getElementById('text').removeAttribute('maxlength')")
        page.fill("[data-testid=text]", "x" * 2100)
        page.click("[data-testid=step-text]")
        page.wait_for_selector("#status.error", timeout=60_000)
        assert "2,048" in page.inner_text("[data-testid=status]")
        assert page.evaluate("document.body.dataset.steps") == "0"
        browser.close()
    assert not errors, errors


def test_cli_play_serves_the_page(tiny_workdirs):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-m", "unisim.cli", "play", "--checkpoint", tiny_workdirs["base"],
                                "--data", tiny_workdirs["clips"], "--starts", "2", "--port", "0", "--steps", "2"],
                               cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("unisim play: open http://127.0.0.1:"), line
        with urllib.request.urlopen(line.split()[3] + "play/starts") as answer:
            assert len(json.load(answer)["starts"]) == 3
    finally:
        process.send_signal(2)
        assert process.wait(timeout=60) == 0
