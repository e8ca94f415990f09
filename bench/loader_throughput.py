"""Training input: batches/s of the grain loader (trainer/data.py) against tf.data reading TFRecord files that hold
the same records, in the same run, at the base shape (16 × 24×40) and at the stored 192×320; then resident memory
of the grain loader over `--memory_batches` batches.

Records: the tabletop sample converted with the tiny stand-in T5 (written once into --workdir). Both loaders do the
same work per example — the `ExampleMaker` of trainer/data.py (JPEG decode, resize, embedding lookup) — so the
comparison is of the loaders: grain's threads over ArrayRecord against tf.data's `TFRecordDataset` → shuffle →
parallel `numpy_function` map → batch → prefetch (AUTOTUNE).

    python bench/loader_throughput.py [--episodes 120] [--batch 8] [--batches 200] [--memory_batches 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def prepare(workdir: str, episodes: int) -> str:
    clips = os.path.join(workdir, f"clips-{episodes}")
    if os.path.exists(os.path.join(clips, "manifest.json")):
        return clips
    source, t5 = os.path.join(workdir, f"tabletop-{episodes}"), os.path.join(workdir, "tiny-t5")
    run = lambda *a: subprocess.run([sys.executable, "-m", "unisim.cli", *a], check=True, capture_output=True)  # noqa: E731
    run("sample", "tiny_t5", "--output", t5)
    builder = subprocess.run([sys.executable, "-m", "unisim.cli", "sample", "tabletop", "--output", source,
                              "--episodes", str(episodes)], check=True, capture_output=True, text=True).stdout.split()[-1]
    run("convert", "--dataset", "language_table", "--source", builder, "--output", clips, "--text_encoder", t5)
    return clips


def grain_rate(clips: str, config, batches: int) -> float:
    from unisim.trainer import data

    return batches_per_second(iter(data.build_input([data.Source(clips, 1.0)], config).dataset), batches)


def batches_per_second(iterator, batches: int) -> float:
    """Rate over `batches` batches after 5 warm-up batches."""
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def write_tfrecords(clips: str, path: str) -> None:
    import tensorflow as tf
    from array_record.python.array_record_module import ArrayRecordReader

    from unisim.trainer import data

    if os.path.exists(path):
        return
    (manifest,) = data.load_manifests([data.Source(clips, 1.0)])
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for shard in manifest.shards:
            reader = ArrayRecordReader(os.path.join(clips, shard.path))
            for record in reader.read_all():
                writer.write(record)
            reader.close()
    os.replace(path + ".tmp", path)


def tfdata_rate(clips: str, tfrecord: str, config, batches: int) -> float:
    import tensorflow as tf

    from unisim.trainer import data

    sources = [data.Source(clips, 1.0)]
    maker = data.ExampleMaker(sources, data.load_manifests(sources), config)
    keys = ["history", "history_mask", "frames", "frame_mask", "text", "text_mask", "controls", "control_mask",
            "drop_condition", "source"]
    rng = np.random.default_rng(0)

    def make(raw):
        example = maker((0, bytes(raw)), rng)
        return [example[k] for k in keys]

    dtypes = [tf.uint8, tf.bool, tf.uint8, tf.bool, tf.float16, tf.bool, tf.int32, tf.bool, tf.bool, tf.int32]
    dataset = (tf.data.TFRecordDataset(tfrecord).repeat().shuffle(256, seed=0)
               .map(lambda raw: tf.numpy_function(make, [raw], dtypes), num_parallel_calls=tf.data.AUTOTUNE)
               .batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    return batches_per_second(iter(dataset), batches)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=120)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--memory_batches", type=int, default=10_000)
    parser.add_argument("--workdir", default="/tmp/unisim-bench-loader")
    args = parser.parse_args()
    from unisim.trainer import data

    os.makedirs(args.workdir, exist_ok=True)
    clips = prepare(args.workdir, args.episodes)
    tfrecord = os.path.join(args.workdir, f"clips-{args.episodes}.tfrecord")
    write_tfrecords(clips, tfrecord)
    records = data.load_manifests([data.Source(clips, 1.0)])[0].records
    print(f"machine: {os.cpu_count()} cores; {records} records of up to 20 frames at 192×320 JPEG; batch {args.batch}, "
          f"{args.threads} loader threads, {args.batches} batches timed after 5")
    for height, width in ((24, 40), (192, 320)):
        config = data.InputConfig(batch_size=args.batch, height=height, width=width, threads=args.threads)
        g = grain_rate(clips, config, args.batches)
        t = tfdata_rate(clips, tfrecord, config, args.batches)
        print(f"{height}×{width}: grain {g:.1f} batches/s, tf.data {t:.1f} batches/s, grain / tf.data {g / t:.2f}×")
    if args.memory_batches:
        config = data.InputConfig(batch_size=args.batch, threads=args.threads)
        iterator = iter(data.build_input([data.Source(clips, 1.0)], config).dataset)
        samples = []
        for i in range(1, args.memory_batches + 1):
            next(iterator)
            if i % max(1, args.memory_batches // 10) == 0:
                samples.append(rss_mib())
        print(f"grain RSS over {args.memory_batches} batches (24×40): {samples[0]:.0f} MiB at the first tenth, "
              f"{samples[-1]:.0f} MiB at the end ({100 * (samples[-1] / samples[0] - 1):+.1f} %); "
              f"samples {[round(s) for s in samples]}")


if __name__ == "__main__":
    main()
