"""`unisim play`: a local web page to try a simulator — pick a start frame, type a text action or press arrow keys
(control deltas), watch the generated frames, reset.

    unisim play --checkpoint runs/base --data demo-output/converted --port 8472   # then open http://127.0.0.1:8472/

The page is one static file (serving/playground.html, no build step, no external scripts) served by the same
HTTP server as `unisim serve` (serving/http.py): it calls the JSON API (/v1/info, /v1/sessions, …) like any
client, so whatever it does a script can do, under the same limits. Two routes are added: GET / (the page) and
GET /play/starts (the start frames: up to `starts` clips of a converted directory, their last history frame as a
PNG, plus a white text-only start).

Controls: each arrow key (or button) sends one control vector. Dimension 0 is ←/→ and dimension 1 is ↑/↓ (the
tabletop world's x and y deltas); a press moves that dimension by `control_step` × half its training range (the
manifest's control statistics), with every other dimension at the middle of its range.
"""

from __future__ import annotations

import base64
import itertools
import os
import re

import numpy as np

from unisim.simulator.core import Simulator

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "playground.html")


def start_frames(directory: str, size: tuple[int, int], count: int, cache_dir: str | None = None
                 ) -> list[dict]:
    """Up to `count` start frames from a converted directory (local or remote): each clip's last history frame
    (its first frame if it has no context), at `size`, as {"name", "frame": uint8 [H, W, 3]}."""
    import tempfile

    from unisim.shards import reader

    manifest = reader.read_manifest(directory)
    shards = [s for s in manifest.shards if s.records][:max(1, count)]
    if not shards:
        raise ValueError(f"{directory}: no records to start from")
    records = reader.iter_records(directory, manifest, shards, validate=False,
                                  cache_dir=cache_dir or os.path.join(tempfile.gettempdir(), "unisim-play"))
    starts = []
    for record in itertools.islice(records, count):
        frame = record.frames[max(record.context_frames, 1) - 1]
        starts.append({"name": f"{record.episode_id} / clip {record.clip_index}",
                       "frame": reader.decode_resized([frame], (record.height, record.width), size)[0]})
    return starts


def _png_base64(frame: np.ndarray) -> str:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return base64.b64encode(data.tobytes()).decode("ascii")


def routes(simulator: Simulator, starts: list[dict], control_step: float = 0.5):
    """The playground's routes for `SimulatorServer(routes=…)`: GET / and GET /play/starts."""
    with open(PAGE, "rb") as f:
        page = f.read()
    listing = {"starts": [{"name": s["name"], "image": _png_base64(s["frame"])} for s in starts]
               + [{"name": "white frames (text only)", "image": None}],
               "control_step": control_step}

    def get_page(request):
        return 200, (page, "text/html; charset=utf-8")

    def get_starts(request):
        return 200, listing

    return [("GET", re.compile(r"/(?:index\.html)?"), get_page), ("GET", re.compile(r"/play/starts"), get_starts)]


def serve_playground(simulator: Simulator, data: str | None = None, *, host: str = "127.0.0.1", port: int = 8472,
                     starts: int = 8, control_step: float = 0.5, **limits):
    """A started `SimulatorServer` with the playground's page; `stop()` it when done. `limits`: the server's
    (connection limits, `credentials`, `insecure`) and its pool's."""
    from unisim.simulator.serving.http import SimulatorServer

    frames = start_frames(data, simulator.output_size, starts) if data else []
    return SimulatorServer(simulator, host, port, routes=routes(simulator, frames, control_step), **limits).start()

