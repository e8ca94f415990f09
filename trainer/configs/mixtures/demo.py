"""The demo mixture: what `make demo` converts under `demo-output/` (DEMO_OUT), weighted like Table 5."""

import os

ROOT = os.environ.get("DEMO_OUT", "demo-output")

MIXTURE = [
    (f"{ROOT}/tabletop-clips", 0.05, "tabletop (Language Table format)"),
]
