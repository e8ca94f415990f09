"""Peak memory and time of each hostile input of issue 21, each in its own process (os.wait4's ru_maxrss).

    python bench/hostile_inputs.py

Each case runs the real code path — an adapter reading its source, the frame decoder, the unpickler — on a bomb
of a few KB, and prints the outcome (a rejection reason or the error line), the seconds and the peak RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CASES = {
    "png_30000x30000_bad_text_crc": """
import struct, zlib
from unisim.samples.fixtures import images as imf
from unisim.pipelines import frames
bomb = imf.png_bomb(30_000, 30_000)
text = b"Comment\\0hello"
bad_crc = struct.pack(">I", zlib.crc32(b"tEXt" + text) ^ 1)
bomb = bomb[:33] + struct.pack(">I", len(text)) + b"tEXt" + text + bad_crc + bomb[33:]
try:
    frames.decode_rgb(bomb)
    print("decoded (!)")
except frames.FrameError as e:
    print("rejected:", e.reason)
""",
    "png_header_100000x100000": """
from unisim.samples.fixtures import images as imf
from unisim.pipelines import frames
try:
    frames.decode_rgb(imf.png_bomb(100_000, 100_000))
    print("decoded (!)")
except frames.FrameError as e:
    print("rejected:", e.reason)
""",
    "tar_sparse_member_4GiB": """
import os, subprocess, tarfile, sys, tempfile
from unisim.adapters import registry
root = tempfile.mkdtemp()
path = os.path.join(root, "000000000.jpg")
with open(path, "wb") as f:
    f.seek(4 << 30)
    f.write(b"x")
subprocess.run(["tar", "--sparse", "-cf", os.path.join(root, "00000.tar"), "-C", root, "000000000.jpg"], check=True)
os.remove(path)
adapter = registry.create("laion", root)
items = [i for u in adapter.work_units() for i in adapter.read(u)]
print("rejected:", [getattr(i, "reason", "episode") for i in items])
""",
    "pickle_bytearray_3GiB": """
import pickle
from unisim.adapters import safe_pickle
class Bomb:
    def __reduce__(self):
        return bytearray, (3 << 30,)
data = pickle.dumps(Bomb(), protocol=2)
try:
    safe_pickle.loads(data)
    print("allocated (!)")
except safe_pickle.UnsafePickleError as e:
    print(f"rejected ({len(data)}-byte pickle): unsafe_pickle")
""",
    "frame_10000000000_jpg": """
import os, re, tempfile
from unisim.adapters import files
root = tempfile.mkdtemp()
for name in ("frame_00000.jpg", "frame_10000000000.jpg"):
    open(os.path.join(root, name), "wb").close()
try:
    files.numbered_files(os.path.join(root, "frame_*"), re.compile(r"frame_(\\d+)\\.jpg$"))
    print("listed (!)")
except files.FrameNumberingError as e:
    print("rejected:", e.reason)
""",
}


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"{'case':32s} {'outcome':40s} {'seconds':>8s} {'peak RSS':>10s}")
    for name, code in CASES.items():
        began = time.monotonic()
        process = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        out, err = process.stdout.read().strip(), process.stderr.read().strip()
        outcome = out.splitlines()[-1] if out else (err.splitlines()[-1] if err else f"exit {status}")
        print(f"{name:32s} {outcome[:40]:40s} {time.monotonic() - began:8.1f} {usage.ru_maxrss / 1024:8.0f} MiB")


if __name__ == "__main__":
    main()
