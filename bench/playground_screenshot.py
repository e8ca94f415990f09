"""A screenshot of `unisim play` (simulator/serving/playground.py) after one text action and one arrow key, taken in
headless Debian Chromium through Playwright — the picture in docs/simulator.md.

    python bench/playground_screenshot.py [--checkpoint DIR --data CONVERTED_DIR] [--output docs/playground.png]

Without --checkpoint, bench/simulator_throughput's tiny base model (trained 2 steps on the tabletop sample) and its
converted clips: the page and its plumbing are what the picture shows, not a trained model's frames.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "playground.png"))
    parser.add_argument("--text", default="push the red block to the left")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "unisim-bench-vector"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from simulator_throughput import tiny_checkpoint
    from unisim.simulator.core import SamplerSettings, Simulator
    from unisim.simulator.serving.playground import serve_playground

    checkpoint = args.checkpoint or tiny_checkpoint(args.workdir)
    data = args.data or (None if args.checkpoint else os.path.join(args.workdir, "clips"))
    sim = Simulator.from_checkpoints(checkpoint, sampler=SamplerSettings(steps=4), max_batch=4)
    server = serve_playground(sim, data, port=0, starts=4)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("UNISIM_CHROMIUM", "/usr/bin/chromium"),
                                        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                              "--disable-background-networking", "--disable-component-update",
                                              "--disable-sync"])
            page = browser.new_page(viewport={"width": 1040, "height": 560})
            page.goto(server.url + "/")
            page.wait_for_function("document.body.dataset.steps === '0'", timeout=120_000)
            began = time.perf_counter()
            page.fill("#text", args.text)
            page.click("[data-testid=step-text]")
            page.wait_for_function("document.body.dataset.steps === '1'", timeout=300_000)
            page.click("#screen")
            page.keyboard.press("ArrowLeft")
            page.wait_for_function("document.body.dataset.steps === '2'", timeout=300_000)
            page.wait_for_timeout(1500)  # the segment finishes playing
            page.screenshot(path=args.output)
            print(f"two steps through the page in {time.perf_counter() - began:.1f} s; wrote {args.output}")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
