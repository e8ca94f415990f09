"""Peak memory of `unisim convert` as the input grows 10× (issue 19, item 2), and bytes per training host (item 3).

    python bench/convert_memory.py [--sizes 10000 100000] [--failed 0.3] [--hosts 1 2 4 8] [--workdir DIR]

Source, per size: image-text rows in img2dataset's webdataset layout (`samples/image_text.py` describes it), shards
of 10,000 rows as img2dataset writes them, each image a distinct 16×16 JPEG with a distinct caption, and a fraction
`--failed` of the rows failed downloads (no files in the tar, status `failed_to_download` in the parquet): those
become dead-letter lines, so both the record path and the dead-letter path carry thousands of items.

Conversion: the whole `unisim convert --dataset laion` command as a user runs it (local runner, one worker,
default 192×320 JPEG frames), with the tiny random T5 stand-in embedding every caption. Peak RSS is the child's
own `ru_maxrss` (os.wait4), so nothing else on the machine counts; RSS is also sampled every 0.5 s.

Hosts: on the largest output, each of H training processes builds its input (`trainer.data.build_input`, process
p of H) from the output through a non-local filesystem that counts the bytes each read (`samples/fixtures/countfs.py`, a
stand-in for gs://); printed per H: the most and fewest bytes one process fetched, against the output's size / H.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np

SHARD_ROWS = 10_000  # img2dataset's default --number_sample_per_shard
WORDS = ("red blue green old new small large wooden metal glass dog cat house car street beach city tree chair lamp "
         "kitchen garden river mountain bicycle boat window door table cup").split()


def write_source(root: str, rows: int, failed: float, seed: int = 0) -> str:
    """`rows` img2dataset rows (module docstring); returns `root`. Written once: a `.done` file marks it complete."""
    import cv2

    from unisim.samples import image_text

    if os.path.exists(os.path.join(root, ".done")):
        return root
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    rng = np.random.default_rng(seed)
    for shard, first in enumerate(range(0, rows, SHARD_ROWS)):
        meta_rows, successes = [], 0
        with tarfile.open(os.path.join(root, f"{shard:05d}.tar"), "w", format=tarfile.USTAR_FORMAT) as archive:
            for row in range(min(SHARD_ROWS, rows - first)):
                key = f"{shard * 10**4 + row:09d}"
                caption = f"{' '.join(rng.choice(WORDS, 4))} number {first + row}"
                meta = {"url": f"https://images.example.com/{key}.jpg", "caption": caption, "key": key,
                        "status": "success", "error_message": None, "width": 16, "height": 16,
                        "original_width": 16, "original_height": 16, "exif": "{}", "sha256": None}
                if rng.random() < failed:
                    meta.update(status="failed_to_download", error_message="HTTP Error 404: Not Found", width=None,
                                height=None, original_width=None, original_height=None, exif=None)
                else:
                    pixels = rng.integers(0, 256, (16, 16, 3), np.uint8)
                    jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                    for name, data in ((f"{key}.jpg", jpeg), (f"{key}.json", json.dumps(meta).encode()),
                                       (f"{key}.txt", caption.encode())):
                        info = tarfile.TarInfo(name)
                        info.size, info.mtime = len(data), 0
                        archive.addfile(info, io.BytesIO(data))
                    successes += 1
                meta_rows.append(meta)
        image_text._parquet(os.path.join(root, f"{shard:05d}.parquet"), meta_rows)
        with open(os.path.join(root, f"{shard:05d}_stats.json"), "w") as f:
            json.dump({"count": len(meta_rows), "successes": successes,
                       "failed_to_download": len(meta_rows) - successes,
                       "failed_to_resize": 0, "status_dict": {}}, f)
    open(os.path.join(root, ".done"), "w").close()
    return root


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def convert(source: str, output: str, text_encoder: str) -> dict:
    """Runs the command; returns wall seconds, CPU seconds, peak RSS and the RSS samples."""
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "unisim.cli", "convert", "--dataset", "laion", "--source", source,
               "--output", output, "--text_encoder", text_encoder]
    log = open(output + ".log", "w")
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    samples = []
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        samples.append(rss_of(process.pid))
        time.sleep(0.5)
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if process.returncode:
        sys.exit(f"convert failed ({process.returncode}): {open(output + '.log').read()[-3000:]}")
    return {"wall_s": time.monotonic() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": usage.ru_maxrss * 1024, "rss_samples_mib": [round(s / 2**20) for s in samples]}


def bytes_per_host(output: str, hosts: list[int], workdir: str) -> dict[int, dict]:
    """Bytes each of H processes fetches to read its share of `output` through `countfs` (module docstring)."""
    from unisim.samples.fixtures import countfs

    from unisim.shards import reader
    from unisim.trainer import data

    root = os.path.dirname(output)
    remote = f"{countfs.PREFIX}{os.path.basename(output)}"
    os.environ["COUNTFS_ROOT"] = root
    total = sum(s.bytes for s in (lambda m: m.shards + m.text_embeddings)(reader.read_manifest(output)))
    results = {}
    for count in hosts:
        fetched = []
        for process in range(count):
            log = os.path.join(workdir, f"reads-{count}-{process}.log")
            open(log, "w").close()
            os.environ["COUNTFS_LOG"] = log
            cache = os.path.join(workdir, f"cache-{count}-{process}")
            shutil.rmtree(cache, ignore_errors=True)
            data.build_input([data.Source(remote, 1.0)], data.InputConfig(cache_dir=cache), process, count)
            fetched.append(sum(sum(f.values()) for f in countfs.bytes_read_by_process(log).values()))
            shutil.rmtree(cache)
        results[count] = {"max": max(fetched), "min": min(fetched), "output_over_hosts": total / count}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--failed", type=float, default=0.3)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--workdir", default="/tmp/unisim-bench-memory")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    from unisim.samples import tiny_t5

    os.makedirs(args.workdir, exist_ok=True)
    t5 = os.path.join(args.workdir, "tiny-t5")
    if not os.path.exists(os.path.join(t5, "config.json")):
        tiny_t5.write_tiny_t5(t5, corpus=WORDS)
    print(f"machine: {os.cpu_count()} cores; image-text rows, {args.failed:.0%} failed downloads, 16×16 JPEGs → "
          "192×320 records, tiny T5 embeddings")
    figures = {"sizes": {}}
    for size in args.sizes:
        start = time.monotonic()
        source = write_source(os.path.join(args.workdir, f"source-{size}"), size, args.failed)
        written = time.monotonic() - start
        output = os.path.join(args.workdir, f"out-{size}")
        run = convert(source, output, t5)
        manifest = json.load(open(os.path.join(output, "manifest.json")))
        run.update(records=manifest["records"], rejected=manifest["rejected"], reasons=manifest["rejected_reasons"],
                   dead_letter_files=len(manifest["dead_letter"]), shards=len(manifest["shards"]))
        figures["sizes"][size] = run
        samples = run["rss_samples_mib"]
        print(f"{size:>7,} rows (source {written:.0f} s): {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} CPU-s; "
              f"{run['records']:,} records in {run['shards']} shards, {run['rejected']:,} rejected "
              f"{run['reasons']} in {run['dead_letter_files']} dead-letter files; peak RSS "
              f"{run['peak_rss_bytes'] / 2**20:.0f} MiB (samples: median {np.median(samples):.0f}, "
              f"last {samples[-1] if samples else 0} MiB)")
    if len(args.sizes) > 1:
        small, large = (figures["sizes"][s]["peak_rss_bytes"] for s in (min(args.sizes), max(args.sizes)))
        figures["peak_rss_ratio"] = large / small
        print(f"peak RSS at {max(args.sizes):,} / at {min(args.sizes):,} rows: {large / small:.3f}")
    hosts = bytes_per_host(os.path.join(args.workdir, f"out-{max(args.sizes)}"), args.hosts, args.workdir)
    figures["bytes_per_host"] = hosts
    for count, row in hosts.items():
        print(f"{count} training processes: each fetched {row['min'] / 2**20:.1f}–{row['max'] / 2**20:.1f} MiB "
              f"(output / {count} = {row['output_over_hosts'] / 2**20:.1f} MiB)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
