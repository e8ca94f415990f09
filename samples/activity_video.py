"""A small human-activity video sample in the Something-Something V2 release layout, read by `adapters/ssv2.py`.

Each video is drawn procedurally: a coloured everyday object (cup, box, ball, bottle) on a textured table is
pushed, pulled, moved up or down, or lifted and dropped by a skin-coloured hand (palm, fingers and a forearm
reaching in from the edge of the frame). Its label is the real SSv2 template for that motion with the
placeholder filled in: "Pushing [something] from left to right" → "pushing red cup from left to right".

Layout, as released (the dataset's download page and its labels README; docs/datasets.md):

    <root>/labels/labels.json                     {"Pushing something from left to right": "93", …}
    <root>/labels/{train,validation}.json         [{"id", "label", "template", "placeholders"}, …]
    <root>/20bn-something-something-v2/<id>.webm  VP9, 12 fps, 240 px high, 320 or 426 px wide, 2-3 s

labels.json holds only the templates used here, each with its index among the release's 174 (which are numbered
in alphabetical order). Labels start in lower case, as the release's do. Every sixth video is in validation.
The same seed gives the same bytes (see `_remux_bitexact`).
"""

from __future__ import annotations

import json
import os
import tempfile

import cv2
import numpy as np

from unisim.fileio.video import write_video

FPS, HEIGHT, WIDTHS = 12, 240, (320, 426)  # 4:3 and 16:9 at SSv2's height; even, as yuv420p needs
FRAME_COUNTS = (24, 36)  # 2-3 s, at least the pipeline's 20-frame clip
VIDEO_DIR = "20bn-something-something-v2"
# Template as released → (its labels.json index, object motion in image directions, side of the object the hand
# holds it from, whether the hand lets go at the top). Pushing hands trail the object, pulling hands lead it.
TEMPLATES = {
    "Pushing [something] from left to right": (93, (1, 0), (-1, 0), False),
    "Pushing [something] from right to left": (94, (-1, 0), (1, 0), False),
    "Pulling [something] from left to right": (86, (1, 0), (1, 0), False),
    "Pulling [something] from right to left": (87, (-1, 0), (-1, 0), False),
    "Moving [something] up": (45, (0, -1), (1, 0), False),
    "Moving [something] down": (43, (0, 1), (1, 0), False),
    "Lifting [something] up completely, then letting it drop down": (28, (0, -1), (0, -1), True),
}
COLORS = {"red": (205, 40, 40), "blue": (40, 80, 205), "green": (40, 150, 60), "yellow": (235, 205, 40),
          "orange": (240, 130, 30), "purple": (135, 60, 165)}
OBJECTS = {"cup": (25, 30), "box": (38, 27), "ball": (26, 26), "bottle": (15, 44)}  # half width, half height (px)
SKINS = ((232, 180, 148), (205, 140, 105), (150, 95, 65), (245, 200, 172))
TABLES = ((150, 105, 65), (190, 160, 120), (120, 125, 130), (205, 200, 190))  # dark/light wood, grey, white


def _shade(rgb, factor: float) -> tuple:
    return tuple(int(min(255, c * factor)) for c in rgb)


def _ease(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


def _background(rng: np.random.Generator, width: int) -> np.ndarray:
    """A wall above a textured table top (wood grain or a woven check), as float RGB."""
    y, x = np.mgrid[0:HEIGHT, 0:width].astype(np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, width)).astype(np.float32), (0, 0), 1.5)
    if rng.random() < 0.6:  # grain running across, wavy
        texture = 0.9 + 0.07 * np.sin(0.3 * y + 2.5 * np.sin(0.012 * x + rng.uniform(0, 6))) + 0.05 * noise
    else:
        cell = int(rng.integers(10, 18))
        texture = 0.92 + 0.08 * ((x // cell + y // cell) % 2) + 0.03 * noise
    table = np.asarray(TABLES[rng.integers(len(TABLES))], np.float32)
    image = texture[..., None] * table
    horizon = int(HEIGHT * rng.uniform(0.22, 0.3))
    wall = np.asarray(_shade((225, 220, 205), rng.uniform(0.8, 1.05)), np.float32)
    image[:horizon] = wall * (0.85 + 0.15 * y[:horizon, :, None] / horizon)  # light falls from above
    image[horizon:horizon + 2] *= 0.6  # the table's back edge
    return image


def _draw_object(frame, kind: str, rgb, cx: int, cy: int) -> None:
    hw, hh = OBJECTS[kind]
    dark, light, aa = _shade(rgb, 0.65), _shade(rgb, 1.3), cv2.LINE_AA
    if kind == "box":
        cv2.rectangle(frame, (cx - hw, cy - hh), (cx + hw, cy + hh), rgb, -1, aa)
        cv2.rectangle(frame, (cx - hw, cy - hh), (cx + hw, cy - hh + 11), light, -1, aa)  # lit lid
        cv2.rectangle(frame, (cx - hw, cy - hh), (cx + hw, cy + hh), dark, 1, aa)
    elif kind == "cup":
        body = np.array([(cx - hw, cy - hh), (cx + hw, cy - hh), (cx + hw - 7, cy + hh), (cx - hw + 7, cy + hh)])
        cv2.ellipse(frame, (cx + hw - 2, cy - 3), (11, 13), 0, -90, 90, dark, 5, aa)  # handle
        cv2.fillConvexPoly(frame, body, rgb, aa)
        cv2.ellipse(frame, (cx, cy - hh), (hw, 7), 0, 0, 360, dark, -1, aa)  # the open top
    elif kind == "ball":
        cv2.circle(frame, (cx, cy), hw, rgb, -1, aa)
        cv2.circle(frame, (cx - hw // 3, cy - hh // 3), hw // 4, light, -1, aa)  # highlight
    else:  # bottle
        cv2.rectangle(frame, (cx - hw, cy - hh + 19), (cx + hw, cy + hh), rgb, -1, aa)
        cv2.rectangle(frame, (cx - hw // 2, cy - hh + 6), (cx + hw // 2, cy - hh + 19), light, -1, aa)
        cv2.rectangle(frame, (cx - hw // 2, cy - hh), (cx + hw // 2, cy - hh + 6), (240, 240, 240), -1, aa)  # cap


def _draw_hand(frame, skin, px: float, py: float, side) -> None:
    """A palm at (px, py) with fingers toward the object and a forearm running off the frame along `side`."""
    aa, sx, sy = cv2.LINE_AA, side[0], side[1]
    cv2.line(frame, (int(px), int(py)), (int(px + 500 * sx), int(py + 500 * sy)), _shade(skin, 0.9), 34, aa)
    cv2.ellipse(frame, (int(px), int(py)), (25, 21), 0 if sx else 90, 0, 360, skin, -1, aa)
    for k in range(4):  # fingertips along the palm's object-facing edge, perpendicular to the arm
        offset = (k - 1.5) * 10
        cv2.circle(frame, (int(px - 20 * sx - offset * sy), int(py - 20 * sy + offset * sx)), 7,
                   _shade(skin, 1.05), -1, aa)


def _frames(rng: np.random.Generator, template: str, kind: str, rgb, width: int, count: int):
    _, move, side, drop = TEMPLATES[template]
    hw, hh = OBJECTS[kind]
    background, skin = _background(rng, width), SKINS[rng.integers(len(SKINS))]
    ground = int(HEIGHT * rng.uniform(0.76, 0.82))  # where the object stands on the table
    travel = width * rng.uniform(0.35, 0.45) if move[0] else HEIGHT * rng.uniform(0.22, 0.26)
    x0 = width / 2 - move[0] * travel / 2 + (0 if move[0] else rng.uniform(-0.12, 0.12) * width)
    y0 = ground - hh - (travel if move[1] > 0 else 0)  # "moving down" starts held up in the air
    reach = (hw if side[0] else hh) + 22  # object centre to palm centre when touching
    for t in range(count):
        u = t / (count - 1)
        held = _ease((u - 0.2) / (0.35 if drop else 0.5))  # the hand carries the object
        gap = 60 * (1 - _ease(u / 0.2)) + 80 * _ease((u - (0.75 if drop else 0.8)) / 0.2)  # approach, withdraw
        hand = (x0 + move[0] * travel * held, y0 + move[1] * travel * held)
        fall = min(1.0, max(0.0, (u - 0.55) / 0.12)) ** 2 if drop else 0.0  # let go: falls back, accelerating
        cx, cy = hand[0], hand[1] + (y0 - hand[1]) * fall
        frame = background.copy()
        shadow = np.zeros((HEIGHT, width), np.uint8)  # on the table under the object, fainter as it rises
        lift = max(0.0, ground - hh - cy)
        cv2.ellipse(shadow, (int(cx), ground), (int(hw * 1.2), 8), 0, 0, 360, int(150 - 0.8 * lift), -1)
        frame *= 1 - cv2.GaussianBlur(shadow, (0, 0), 3)[..., None].astype(np.float32) / 255
        frame = frame.astype(np.uint8)
        _draw_object(frame, kind, rgb, int(cx), int(cy))
        _draw_hand(frame, skin, hand[0] + side[0] * (reach + gap), hand[1] + side[1] * (reach + gap), side)
        yield frame


def _remux_bitexact(src: str, dst: str) -> None:
    """Copies the packets into a new WebM with FFmpeg's bit-exact flag: its Matroska muxer otherwise draws
    random track UIDs, so equal frames would give different bytes."""
    import av

    with av.open(src) as source, av.open(dst, "w", options={"fflags": "+bitexact"}) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # the demuxer's final flush packet carries nothing
                packet.stream = stream
                target.mux(packet)


def write_sample(root: str, num_videos: int = 24, seed: int = 0) -> str:
    """Writes `num_videos` labelled videos under `root`; returns `root`, the `--source` for `--dataset ssv2`."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, VIDEO_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    splits: dict[str, list] = {"train": [], "validation": []}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(num_videos):
            video_id = str(seed * 1_000_000 + i + 1)  # SSv2 ids are decimal strings
            template = list(TEMPLATES)[i % len(TEMPLATES)]  # cycle, so every motion appears
            color, kind = list(COLORS)[rng.integers(len(COLORS))], list(OBJECTS)[rng.integers(len(OBJECTS))]
            placeholder = f"{color} {kind}"
            label = template.replace("[something]", placeholder)
            width, count = WIDTHS[rng.integers(2)], int(rng.integers(FRAME_COUNTS[0], FRAME_COUNTS[1] + 1))
            encoded = write_video(os.path.join(scratch, f"{video_id}.webm"),
                                  _frames(rng, template, kind, COLORS[color], width, count), FPS, "vp9")
            _remux_bitexact(encoded, os.path.join(root, VIDEO_DIR, f"{video_id}.webm"))
            splits["validation" if i % 6 == 5 else "train"].append(
                {"id": video_id, "label": label[0].lower() + label[1:], "template": template,
                 "placeholders": [placeholder]})
    used = sorted({TEMPLATES[e["template"]][0]: e["template"] for s in splits.values() for e in s}.items())
    files = {"labels": {t.replace("[", "").replace("]", ""): str(index) for index, t in used}, **splits}
    for name, data in files.items():
        with open(os.path.join(root, "labels", f"{name}.json"), "w") as f:
            json.dump(data, f, indent=1)
    return root
