"""Table 5 at its real size: what converting and training on the paper's ~820 M examples costs (issue 19, item 1).

    python bench/capacity.py [--workdir DIR] [--output FILE.json] [--step_seconds 1.0] [--hosts 128]

1. **Measures** on this machine, per adapter family, the CPU time `unisim convert` spends per unit of input: the
   whole command run on a small and a larger generated source in the release's layout; the cost per unit is the
   difference of the child process's CPU seconds (user + system, os.wait4) over the difference of units, so
   process start-up and pipeline set-up (paid once per worker, not per example) drop out, and so does whatever
   else the machine is doing. Default output (192×320 JPEG q95), local runner, one worker.
     robot_rlds   the tabletop world in the Language Table RLDS layout, 360×640 JPEG steps   per source frame
     video_360p   H.264 30 fps 640×360 (keyframe every 2 s), `video_captions` rows tiling    per second of video
     video_1080p  the same at 1920×1080                                                        per second of video
                  the video with 4 s windows (20 frames at --fps 5: each frame decoded once)
     image_text   img2dataset webdataset tars of 256×256 JPEGs (its default size)              per image
     r2r          Matterport skyboxes of 1024×1024 faces (the release's), R2R paths + rotations per record
   It also measures the stored bytes per frame of each family's output.
2. **Prices** Table 5 from those rates: for each dataset, its example count (the paper's), the units one example
   costs (below, each with where the figure comes from), records per example, and text tokens per record.
   Video at other sizes or rates costs a + b·pixels per source frame, a line through the two measured sizes.
3. **Prints** vCPU-hours per dataset and in all, output bytes (frames, and text embeddings at d_model 4096 stored
   as `schemas.text_embeddings.STORED_DTYPE`, one entry per record: every conditioning text is unique — captions,
   narrations, and robot texts carrying their controls as text), T5-XXL encoder accelerator-hours, and the input
   bandwidth the training job needs at batch 256 and `--step_seconds`, per host over `--hosts`.

Measured rates are of generated content (textured noise, synthetic scenes), not the releases' own pixels; JPEG
sizes and H.264 decode costs of real footage differ. Run time here: about 10 minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

D_MODEL = 4096  # t5-v1_1-xxl
# T5-XXL encoder FLOPs per token: 2 × its matmul parameters (24 layers × (4·4096·4096 attention + 3·4096·10240
# gated FF) = 4.6 G), attention scores over ≤ 64 tokens negligible.
T5_XXL_ENCODER_FLOPS_PER_TOKEN = 2 * 24 * (4 * 4096 * 4096 + 3 * 4096 * 10240)
# Assumed accelerator throughput: an H100 SXM's 989 dense bf16 TFLOP/s at 40 % utilisation (an assumption, not a
# measurement: no accelerator was lent to this work), and batches padded to their longest text (×1.3).
ACCELERATOR_FLOPS = 989e12 * 0.40
PADDING = 1.3
WINDOW_S = 4.0  # a video example: 20 frames at --fps 5 (4 history + 16 targets)
CAPTION_TOKENS = 20  # a caption or narration (the yardstick)
CONTROL_TEXT_TOKENS = 64  # a robot/navigation text with its controls as text: at the encoder's cap


def frames_per_record_clips(frames: float) -> tuple[float, float]:
    """(records, frames stored) for an episode of `frames` source frames cut into 20-frame clips with 4 shared."""
    records = max(1, math.ceil((frames - 4) / 16))
    return records, frames + 4 * (records - 1)


# name, examples (Table 5), mixture weight, family, units per example, records per example, frames per record,
# text tokens per record, where the shape comes from.
def datasets(video_cost) -> list[dict]:
    def robot(name, examples, weight, frames, note):
        records, stored = frames_per_record_clips(frames)
        return dict(name=name, examples=examples, weight=weight, family="robot_rlds", units=frames,
                    records=records, frames=stored / records, tokens=CONTROL_TEXT_TOKENS, note=note)

    def video(name, examples, weight, height, width, fps, note):
        seconds_equivalent = WINDOW_S * fps / 30 * video_cost(height * width) / video_cost(1080 * 1920)
        return dict(name=name, examples=examples, weight=weight, family="video_1080p", units=seconds_equivalent,
                    records=1, frames=20, tokens=CAPTION_TOKENS, note=note)

    return [
        robot("Habitat HM3D", 710, 0.1, 100, "assumed 100 rendered steps a demonstration"),
        robot("Language Table sim", 160e3, 0.05, 24.8, "4,484,403 frames / 181,020 episodes (LeRobot's conversion)"),
        robot("Bridge Data", 2e3, 0.05, 38, "assumed 38 steps (5 Hz, ~8 s)"),
        robot("RT-1 data", 70e3, 0.1, 40, "assumed 40 steps (3 Hz)"),
        robot("Language Table real", 440e3, 0.05, 15.9, "7,045,476 frames / 442,226 episodes (LeRobot's conversion)"),
        robot("Misc. robot videos", 133e3, 0.05, 16, "assumed like Language Table real"),
        video("Ego4D", 3.5e6, 0.1, 1080, 1440, 30, "full_scale 1440×1080 30 fps, one 4 s window a narration"),
        video("Something-Something V2", 160e3, 0.1, 240, 427, 12, "whole ~4 s VP9 video, 240 px high, 12 fps"),
        video("EPIC-KITCHENS", 25e3, 0.1, 1080, 1920, 59.94, "1080p 59.94 fps, a 4 s window a segment"),
        video("Misc. human videos", 50e3, 0.05, 1080, 1920, 30, "assumed 1080p 30 fps"),
        dict(name="Matterport R2R scans", examples=3.5e6, weight=0.1, family="r2r", units=1, records=1, frames=None,
             tokens=CONTROL_TEXT_TOKENS, note="a record (path or rotation clip) an example"),
        dict(name="LAION-400M", examples=400e6, weight=0.05, family="image_text", units=1, records=1, frames=1,
             tokens=CAPTION_TOKENS, note="img2dataset 256×256"),
        dict(name="ALIGN", examples=400e6, weight=0.05, family="image_text", units=1, records=1, frames=1,
             tokens=CAPTION_TOKENS, note="as LAION"),
        video("Misc. internet videos", 13e6, 0.05, 360, 640, 30, "assumed 360p 30 fps"),
    ]


# ------------------------------------------------------------------------------------------------- sources


def write_robot(root: str, size: int) -> tuple[str, float]:
    from unisim.samples import tabletop

    builder = tabletop.write_sample(root, num_episodes=size, max_steps=30, num_shards=4)
    return builder, 0.0  # units: frames encoded, read from the command's output


def write_video(root: str, size: int, height: int) -> tuple[str, float]:
    from video_convert_throughput import write_videos

    videos = write_videos(root, 2, size, height)
    table = os.path.join(root, "captions.csv")
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "caption", "start", "end"])
        for v, video in enumerate(videos):
            for k in range(int(size // WINDOW_S)):
                writer.writerow([os.path.basename(video), f"segment {k} of video {v}", WINDOW_S * k,
                                 WINDOW_S * (k + 1)])
    return table, 2.0 * int(size // WINDOW_S) * WINDOW_S


def write_images(root: str, size: int) -> tuple[str, float]:
    from image_nav_throughput import write_laion

    write_laion(root, size, 256, 256)
    return root, float(size)


def write_r2r(root: str, size: int) -> tuple[str, float]:
    from image_nav_throughput import write_r2r as write

    write(root, size, face_size=1024)
    return root, 0.0  # units: records


FAMILIES = {  # name: (writer, small, large, dataset, extra convert flags, unit)
    "robot_rlds": (write_robot, 8, 96, "language_table", [], "source frame"),
    "video_360p": (lambda r, s: write_video(r, s, 360), 40, 160, "video_captions", ["--fps", "5"], "video second"),
    "video_1080p": (lambda r, s: write_video(r, s, 1080), 12, 48, "video_captions", ["--fps", "5"], "video second"),
    "image_text": (write_images, 300, 5000, "laion", [], "image"),
    "r2r": (write_r2r, 1, 4, "r2r", [], "record"),
}


def convert(dataset: str, source: str, output: str, extra: list[str]) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "unisim.cli", "convert", "--dataset", dataset, "--source", source,
               "--output", output, *extra]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate()
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    line = next(line for line in stdout.splitlines() if "frames encoded" in line)
    manifest = json.load(open(os.path.join(output, "manifest.json")))
    from unisim.shards import reader

    frames = sum(r.num_frames for r in reader.iter_records(output))
    return {"wall_s": time.monotonic() - start, "records": manifest["records"], "record_frames": frames,
            "frames_encoded": int(line.split("(")[1].split()[0]),
            "record_bytes": sum(s["bytes"] for s in manifest["shards"])}


def cpu_seconds_of(fn, *args):
    before = os.times()
    result = fn(*args)
    after = os.times()
    return result, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def measure(workdir: str) -> dict[str, dict]:
    rates = {}
    for family, (write, small, large, dataset, extra, unit) in FAMILIES.items():
        runs = []
        for size in (small, large):
            root = os.path.join(workdir, f"{family}-{size}")
            marker = root + ".source.json"
            if os.path.exists(marker):
                source, units = json.load(open(marker))
            else:
                shutil.rmtree(root, ignore_errors=True)
                os.makedirs(root)
                source, units = write(root, size)
                json.dump([source, units], open(marker, "w"))
            run, cpu = cpu_seconds_of(convert, dataset, source, os.path.join(workdir, f"out-{family}-{size}"), extra)
            if unit == "source frame":
                units = run["frames_encoded"]
            elif unit == "record":
                units = run["records"]
            runs.append(dict(run, cpu_s=cpu, units=units))
        a, b = runs
        per_unit = (b["cpu_s"] - a["cpu_s"]) / (b["units"] - a["units"])
        rates[family] = {"unit": unit, "cpu_s_per_unit": per_unit, "runs": runs,
                         "bytes_per_frame": b["record_bytes"] / b["record_frames"],
                         "frames_per_record": b["record_frames"] / b["records"]}
        print(f"{family:12s} {per_unit * 1e3:9.2f} CPU-ms per {unit:12s} ({b['units'] - a['units']:.0f} more units: "
              f"{a['cpu_s']:.1f} → {b['cpu_s']:.1f} CPU-s, {a['wall_s']:.0f} / {b['wall_s']:.0f} s wall); "
              f"{rates[family]['bytes_per_frame'] / 1e3:.1f} kB a stored frame", flush=True)
    return rates


# -------------------------------------------------------------------------------------------------- price


def embedding_bytes(tokens: int, workdir: str) -> float:
    """Bytes on disk for one entry of `tokens` tokens: the real codec's entry, the ArrayRecord overhead per record
    (measured on a shard of 64 such entries) and the `.keys` line."""
    from unisim.pipelines.output import write_shard
    from unisim.schemas import text_embeddings as emb

    entry = emb.TextEmbedding("0" * 32, "a caption of about twenty tokens, as LAION's captions are, roughly",
                              np.random.default_rng(0).standard_normal((tokens, D_MODEL)).astype(np.float32),
                              np.arange(tokens, dtype=np.int32))
    data = emb.encode_entry(entry)
    path = os.path.join(workdir, f"entries-{tokens}.array_record")
    count, size, _ = write_shard([data] * 64, path)
    return size / count + 33


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/unisim-bench-capacity")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    parser.add_argument("--batch", type=int, default=256, help="global batch (Table 6)")
    parser.add_argument("--step_seconds", type=float, default=1.0, help="training step time assumed for bandwidth")
    parser.add_argument("--hosts", type=int, default=128, help="training hosts (512 TPU-v3 chips, 4 a host)")
    args = parser.parse_args()
    from unisim.schemas.text_embeddings import STORED_DTYPE

    os.makedirs(args.workdir, exist_ok=True)
    start = time.monotonic()
    print(f"machine: {os.cpu_count()} cores; CPU seconds of whole `unisim convert` commands, small vs large source")
    rates = measure(args.workdir)
    c360, c1080 = rates["video_360p"]["cpu_s_per_unit"], rates["video_1080p"]["cpu_s_per_unit"]
    p360, p1080 = 360 * 640, 1080 * 1920
    slope = (c1080 - c360) / (p1080 - p360)

    def video_cost(pixels: int) -> float:  # CPU-s per second of 30 fps video at `pixels` a frame
        return max(c360 + slope * (pixels - p360), 0.0)

    per_entry = {t: embedding_bytes(t, args.workdir) for t in (CAPTION_TOKENS, CONTROL_TEXT_TOKENS)}
    table = datasets(video_cost)
    print(f"\nTable 5 priced (video: a + b·pixels per 30 fps second, {c360:.3f} CPU-s at 360p, {c1080:.3f} at 1080p; "
          f"embeddings {STORED_DTYPE} at d_model {D_MODEL}: {per_entry[CAPTION_TOKENS] / 1e3:.1f} kB for "
          f"{CAPTION_TOKENS} tokens, {per_entry[CONTROL_TEXT_TOKENS] / 1e3:.1f} kB for {CONTROL_TEXT_TOKENS})")
    print("| dataset | examples | family | vCPU-hours | records | frame bytes | embedding bytes | shape (source) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    result = {"datasets": {}, "rates": rates}
    totals = dict(vcpu=0.0, frames=0.0, embeddings=0.0, tokens=0.0, records=0.0)
    mixture_bytes, mixture_weight = 0.0, 0.0
    for row in table:
        rate = rates[row["family"]]
        frames_per_record = row["frames"] or rate["frames_per_record"]
        vcpu = row["examples"] * row["units"] * rate["cpu_s_per_unit"] / 3600
        records = row["examples"] * row["records"]
        frame_bytes = records * frames_per_record * rate["bytes_per_frame"]
        emb_bytes = records * per_entry[row["tokens"]]
        result["datasets"][row["name"]] = {"examples": row["examples"], "vcpu_hours": vcpu,
                                           "bytes": frame_bytes + emb_bytes, "frame_bytes": frame_bytes,
                                           "embedding_bytes": emb_bytes, "records": records,
                                           "family": row["family"], "shape": row["note"]}
        totals["vcpu"] += vcpu
        totals["frames"] += frame_bytes
        totals["embeddings"] += emb_bytes
        totals["tokens"] += records * row["tokens"]
        totals["records"] += records
        mixture_bytes += row["weight"] * (frame_bytes + emb_bytes) / records
        mixture_weight += row["weight"]
        print(f"| {row['name']} | {row['examples']:,.0f} | {row['family']} | {vcpu:,.1f} | {records:,.0f} | "
              f"{frame_bytes / 1e12:,.3f} TB | {emb_bytes / 1e12:,.3f} TB | {row['note']} |")
    print(f"| **total** | {sum(r['examples'] for r in table):,.0f} | | **{totals['vcpu']:,.0f}** | "
          f"{totals['records']:,.0f} | {totals['frames'] / 1e12:,.1f} TB | {totals['embeddings'] / 1e12:,.1f} TB | |")
    accelerator_hours = totals["tokens"] * T5_XXL_ENCODER_FLOPS_PER_TOKEN * PADDING / ACCELERATOR_FLOPS / 3600
    example_bytes = mixture_bytes / mixture_weight
    job_bandwidth = args.batch * example_bytes / args.step_seconds
    goal = "met" if totals["vcpu"] <= 2000 else "NOT met"
    print(f"\nconversion: {totals['vcpu']:,.0f} vCPU-hours (goal ≤ 2,000: {goal}); output "
          f"{(totals['frames'] + totals['embeddings']) / 1e12:,.1f} TB ({totals['frames'] / 1e12:,.1f} TB frames, "
          f"{totals['embeddings'] / 1e12:,.1f} TB text embeddings)")
    print(f"T5-XXL encoder: {totals['tokens'] / 1e9:,.1f} G tokens × {T5_XXL_ENCODER_FLOPS_PER_TOKEN / 1e9:.1f} "
          f"GFLOP × {PADDING} padding at {ACCELERATOR_FLOPS / 1e12:.0f} TFLOP/s (H100 bf16 dense at 40 %, assumed) = "
          f"{accelerator_hours:,.0f} accelerator-hours")
    print(f"training input: {example_bytes / 1e3:.0f} kB an example at the mixture's weights (frames + embedding); "
          f"batch {args.batch} every {args.step_seconds:g} s = {job_bandwidth / 1e6:,.0f} MB/s for the job, "
          f"{job_bandwidth / args.hosts / 1e6:,.2f} MB/s per host over {args.hosts} hosts")
    print(f"bench time {time.monotonic() - start:.0f} s")
    result.update(total_vcpu_hours=totals["vcpu"], embedding_bytes_total=totals["embeddings"],
                  frame_bytes_total=totals["frames"], text_tokens_total=totals["tokens"],
                  t5_xxl_accelerator_hours=accelerator_hours, accelerator_flops_assumed=ACCELERATOR_FLOPS,
                  stored_dtype=STORED_DTYPE, embedding_bytes_per_entry=per_entry,
                  training_bytes_per_example=example_bytes, training_job_bytes_per_s=job_bandwidth,
                  training_host_bytes_per_s=job_bandwidth / args.hosts, hosts=args.hosts,
                  step_seconds=args.step_seconds, batch=args.batch)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
