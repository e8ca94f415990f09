"""Training input: batches/s of the grain loader (trainer/data.py) against its peers, in one run over the same
records, at the base shape (16 × 24×40) and at the stored 192×320; then resident memory of the grain loader over
`--memory_batches` batches.

Records: the tabletop sample converted with the tiny stand-in T5 (written once into --workdir). The peers:

- **tf.data, numpy_function**: `TFRecordDataset` of the same record bytes → shuffle → parallel `numpy_function`
  running the loader's own `ExampleMaker` (so the same per-example work, holding the GIL) → batch → prefetch.
- **tf.data, native** (tf.data at its best): the records rewritten as `tf.train.Example`s — frames, context length,
  control tokens, and the text embedding joined in as float16 bytes (no store lookup at all) — read with
  `num_parallel_reads`, parsed and decoded by TensorFlow's own ops in a parallel, non-deterministic map:
  `tf.io.decode_jpeg(ratio=8)` for the 1/8-scale decode (the same libjpeg DCT scaling the loader uses), native
  resize otherwise, AUTOTUNE everywhere.
- **bare reader** (the limit): `ArrayRecordDataSource` reads at shuffled indices and `ExampleMaker.batch` decodes,
  whole batches in a thread pool of `--threads` threads, no framework in between.

grain is reported as a ratio of the best tf.data and of the bare reader (issue 19's goals: ≥ 1.5× and ≥ 0.8×).

    python bench/loader_throughput.py [--episodes 120] [--batch 8] [--batches 200] [--memory_batches 10000]
                                      [--loaders grain tfdata_numpy tfdata_native bare] [--shapes 24x40 192x320]

The machine's speed drifts between runs: for ratios, time one loader per process, alternating (A B A B …), and
take the medians.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


LOADERS = {"grain": "grain", "tfdata_numpy": "tf.data numpy_function", "tfdata_native": "tf.data native",
           "bare": "bare reader"}


def prepare(workdir: str, episodes: int) -> str:
    clips = os.path.join(workdir, f"clips-{episodes}")
    if os.path.exists(os.path.join(clips, "manifest.json")):
        return clips
    source, t5 = os.path.join(workdir, f"tabletop-{episodes}"), os.path.join(workdir, "tiny-t5")
    run = lambda *a: subprocess.run([sys.executable, "-m", "unisim.cli", *a], check=True, capture_output=True)  # noqa: E731
    run("sample", "tiny_t5", "--output", t5)
    builder = subprocess.run([sys.executable, "-m", "unisim.cli", "sample", "tabletop", "--output", source,
                              "--episodes", str(episodes)], check=True, capture_output=True, text=True)
    builder = builder.stdout.split()[-1]
    run("convert", "--dataset", "language_table", "--source", builder, "--output", clips, "--text_encoder", t5)
    return clips


def batches_per_second(iterator, batches: int) -> float:
    """Rate over `batches` batches after 5 warm-up batches."""
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def write_tfrecords(clips: str, path: str) -> None:
    if os.path.exists(path):  # before importing TensorFlow: a grain-only run never loads it
        return
    import tensorflow as tf
    from array_record.python.array_record_module import ArrayRecordReader

    from unisim.trainer import data

    (manifest,) = data.load_manifests([data.Source(clips, 1.0)])
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for shard in manifest.shards:
            reader = ArrayRecordReader(os.path.join(clips, shard.path))
            for record in reader.read_all():
                writer.write(record)
            reader.close()
    os.replace(path + ".tmp", path)


def tfdata_numpy(clips: str, tfrecord: str, config):
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
    return iter(dataset)


def write_tf_examples(clips: str, path: str) -> None:
    """The records as `tf.train.Example`s for the native tf.data pipeline (module docstring)."""
    if os.path.exists(path):
        return
    import tensorflow as tf
    from array_record.python.array_record_module import ArrayRecordReader

    from unisim.schemas import record as rec
    from unisim.schemas.text_embeddings import TextEmbeddingStore
    from unisim.trainer import data

    (manifest,) = data.load_manifests([data.Source(clips, 1.0)])
    store = TextEmbeddingStore.from_manifest(clips, manifest)
    feature = tf.train.Feature
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for shard in manifest.shards:
            reader = ArrayRecordReader(os.path.join(clips, shard.path))
            for raw in reader.read_all():
                record = rec.decode(raw, validate_record=False)
                tokens = np.asarray(record.control_tokens, np.int64)
                embedding = store.lookup(record.text_key).embedding.astype("<f2")
                example = tf.train.Example(features=tf.train.Features(feature={
                    "frames": feature(bytes_list=tf.train.BytesList(value=list(record.frames))),
                    "context": feature(int64_list=tf.train.Int64List(value=[record.context_frames])),
                    "control_dims": feature(int64_list=tf.train.Int64List(value=[tokens.shape[1]])),
                    "controls": feature(int64_list=tf.train.Int64List(value=tokens.reshape(-1).tolist())),
                    "text": feature(bytes_list=tf.train.BytesList(value=[embedding.tobytes()])),
                }))
                writer.write(example.SerializeToString())
            reader.close()
    store.close()
    os.replace(path + ".tmp", path)


def tfdata_native(path: str, config, text_dim: int, control_dims: int, stored=(192, 320)):
    """The native tf.data pipeline (module docstring); yields batches of the loader's keys."""
    import tensorflow as tf

    c = config
    ratio = next((f for f in (8, 4, 2) if stored == (c.height * f, c.width * f)), 1)
    spec = {"frames": tf.io.VarLenFeature(tf.string), "context": tf.io.FixedLenFeature([], tf.int64),
            "control_dims": tf.io.FixedLenFeature([], tf.int64), "controls": tf.io.VarLenFeature(tf.int64),
            "text": tf.io.FixedLenFeature([], tf.string)}

    def decode(jpeg):
        image = tf.io.decode_jpeg(jpeg, channels=3, ratio=ratio)
        if ratio == 1 and stored != (c.height, c.width):
            image = tf.cast(tf.image.resize(image, (c.height, c.width), method="area"), tf.uint8)
        return tf.ensure_shape(image, (c.height, c.width, 3))

    def frames_of(jpegs):
        return tf.map_fn(decode, jpegs, fn_output_signature=tf.TensorSpec((c.height, c.width, 3), tf.uint8))

    def parse(serialized):
        f = tf.io.parse_single_example(serialized, spec)
        jpegs = tf.sparse.to_dense(f["frames"], default_value="")
        context = tf.cast(f["context"], tf.int32)
        history = frames_of(jpegs[tf.maximum(0, context - c.history_frames):context])
        targets = frames_of(jpegs[context:context + c.frames])
        h, t = tf.shape(history)[0], tf.shape(targets)[0]
        text = tf.reshape(tf.io.decode_raw(f["text"], tf.float16), (-1, text_dim))[: c.text_tokens]
        n_text = tf.shape(text)[0]
        dims = tf.cast(f["control_dims"], tf.int32)
        tokens = tf.cast(tf.reshape(tf.sparse.to_dense(f["controls"]), (-1, dims)), tf.int32)
        before = context - 1 + tf.range(t)  # the frame whose action leads to each target
        controls = tf.gather(tokens, tf.maximum(before, 0)) * tf.cast(before[:, None] >= 0, tf.int32)
        control_mask = tf.broadcast_to(before[:, None] >= 0, tf.shape(controls))
        pad_dims = [[0, c.frames - t], [0, control_dims - dims]]
        return {"history": tf.pad(history, [[c.history_frames - h, 0], [0, 0], [0, 0], [0, 0]]),
                "history_mask": tf.range(c.history_frames) >= c.history_frames - h,
                "frames": tf.pad(targets, [[0, c.frames - t], [0, 0], [0, 0], [0, 0]]),
                "frame_mask": tf.range(c.frames) < t,
                "text": tf.pad(text, [[0, c.text_tokens - n_text], [0, 0]]),
                "text_mask": tf.range(c.text_tokens) < n_text,
                "controls": tf.pad(controls, pad_dims), "control_mask": tf.pad(control_mask, pad_dims),
                "drop_condition": tf.random.uniform(()) < c.condition_drop, "source": tf.constant(0, tf.int32)}

    return (tf.data.TFRecordDataset([path], num_parallel_reads=tf.data.AUTOTUNE).repeat().shuffle(256, seed=0)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(c.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())


def bare_reader(clips: str, config):
    """The limit: ArrayRecord reads at shuffled indices and `ExampleMaker.batch`, whole batches in a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    import grain

    from unisim.trainer import data

    sources = [data.Source(clips, 1.0)]
    (manifest,) = data.load_manifests(sources)
    maker = data.ExampleMaker(sources, [manifest], config)
    records = grain.sources.ArrayRecordDataSource([os.path.join(clips, s.path) for s in manifest.shards
                                                   if s.records])
    order = np.random.default_rng(0).permutation(len(records))

    def one(b: int):
        rng = np.random.default_rng(b)
        indices = [int(order[(b * config.batch_size + i) % len(order)]) for i in range(config.batch_size)]
        return maker.batch([(0, records[i]) for i in indices], rng)

    pool = ThreadPoolExecutor(config.threads)
    b = 0
    pending = []
    while True:  # keep `threads` batches in flight, in order
        while len(pending) < config.threads:
            pending.append(pool.submit(one, b))
            b += 1
        yield pending.pop(0).result()


def check_native_matches(clips: str, tf_examples: str, config, text_dim: int, control_dims: int) -> float:
    """Mean absolute pixel difference between the native pipeline's target frames and the loader's, on one record
    (the same decode and scale): guards the comparison against a peer that does less work."""
    import dataclasses

    from unisim.trainer import data

    one = dataclasses.replace(config, batch_size=1, condition_drop=0.0)
    sources = [data.Source(clips, 1.0)]
    (manifest,) = data.load_manifests(sources)
    maker = data.ExampleMaker(sources, [manifest], one)
    import tensorflow as tf

    raw = next(iter(tf.data.TFRecordDataset([tf_examples])))
    example = next(tfdata_native_single(raw, one, text_dim, control_dims))
    from array_record.python.array_record_module import ArrayRecordReader

    shard = next(s for s in manifest.shards if s.records)
    reader = ArrayRecordReader(os.path.join(clips, shard.path))
    want = maker((0, reader.read([0])[0]), np.random.default_rng(0))
    reader.close()
    return float(np.abs(example["frames"].astype(int) - want["frames"].astype(int)).mean())


def tfdata_native_single(raw, config, text_dim, control_dims):
    import tensorflow as tf

    path = os.path.join("/tmp", f"unisim-one-{os.getpid()}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(raw.numpy())
    batch = next(tfdata_native(path, config, text_dim, control_dims))
    os.remove(path)
    yield {k: v[0] for k, v in batch.items()}


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
    parser.add_argument("--loaders", nargs="+", choices=list(LOADERS), default=list(LOADERS),
                        help="which to time (one at a time, in separate processes, for paired runs)")
    parser.add_argument("--shapes", nargs="+", default=["24x40", "192x320"], help="HEIGHTxWIDTH of the input")
    args = parser.parse_args()
    from unisim.trainer import data

    os.makedirs(args.workdir, exist_ok=True)
    clips = prepare(args.workdir, args.episodes)
    tfrecord = os.path.join(args.workdir, f"clips-{args.episodes}.tfrecord")
    write_tfrecords(clips, tfrecord)
    tf_examples = os.path.join(args.workdir, f"clips-{args.episodes}.examples.tfrecord")
    write_tf_examples(clips, tf_examples)
    (manifest,) = data.load_manifests([data.Source(clips, 1.0)])
    text_dim = manifest.text_encoder.d_model
    control_dims = len(manifest.control_stats.names) if manifest.control_stats else 0
    print(f"machine: {os.cpu_count()} cores; {manifest.records} records of up to 20 frames at 192×320 JPEG; batch "
          f"{args.batch}, {args.threads} loader threads, {args.batches} batches timed after 5 (batches/s)")
    print("| shape | " + " | ".join(LOADERS[name] for name in args.loaders) + " |" + "".join(
        f" grain / {LOADERS[name]} |" for name in args.loaders if name != "grain" and "grain" in args.loaders))
    print("| --- |" + " ---: |" * (len(args.loaders) + ("grain" in args.loaders) * (len(args.loaders) - 1)))
    for shape in args.shapes:
        height, width = (int(v) for v in shape.split("x"))
        config = data.InputConfig(batch_size=args.batch, height=height, width=width, threads=args.threads,
                                  prefetch=max(2, args.threads))
        if "tfdata_native" in args.loaders:
            difference = check_native_matches(clips, tf_examples, config, text_dim, control_dims)
            if difference > 2.0:
                sys.exit(f"the native tf.data pipeline decodes differently ({difference:.2f} levels): not comparable")
        streams = {"grain": lambda: iter(data.build_input([data.Source(clips, 1.0)], config).dataset),
                   "tfdata_numpy": lambda: tfdata_numpy(clips, tfrecord, config),
                   "tfdata_native": lambda: tfdata_native(tf_examples, config, text_dim, control_dims),
                   "bare": lambda: bare_reader(clips, config)}
        rates = {name: batches_per_second(streams[name](), args.batches) for name in args.loaders}
        ratios = [f" {rates['grain'] / rates[name]:.2f}× |" for name in args.loaders
                  if name != "grain" and "grain" in rates]
        print(f"| {height}×{width} | " + " | ".join(f"{rates[name]:.1f}" for name in args.loaders) + " |"
              + "".join(ratios), flush=True)
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
