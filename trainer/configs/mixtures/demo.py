"""The demo mixture: what `make demo` converts under `demo-output/clips/` (DEMO_OUT). The demo writes the same
weights into `demo-output/mixture.py` with absolute paths (unisim/demo.py, MIXTURE_WEIGHTS)."""

import os

ROOT = os.path.join(os.environ.get("DEMO_OUT", "demo-output"), "clips")

MIXTURE = [
    (f"{ROOT}/tabletop", 0.6, "tabletop"),  # Language Table RLDS format
    (f"{ROOT}/activity-video", 0.2, "activity-video"),  # Something-Something V2 layout
    (f"{ROOT}/image-text", 0.2, "image-text"),  # img2dataset webdataset layout
]
