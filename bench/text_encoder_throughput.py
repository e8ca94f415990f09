"""Text encoder stage throughput: input strings/s with and without deduplication, on two action distributions.

    python bench/text_encoder_throughput.py [--strings 4096] [--batch_size 32] [--text_encoder PATH]

Distributions (seeded, printed with their unique counts):
  language_table  many repeats of few instructions: 64 instructions drawn with Zipf-like weights (p ∝ 1/rank)
  laion           mostly unique captions: 5–20 random words each, 3 % exact repeats

Encoders: with --text_encoder, that checkpoint; otherwise two randomly initialised stand-ins (no pretrained weights
can be downloaded here) — "tiny" (d_model 32, 2 layers, the tests' encoder) and "t5-small-shape" (d_model 512,
6 layers, 8 heads, d_ff 1024: T5-small's compute with a small vocabulary). Random weights cost the same FLOPs as
trained ones, so the timings stand; the embeddings mean nothing.

Modes, all counting *input* strings per second:
  no dedup      every string through the encoder, batches in arrival order (what a per-record encoder does)
  dedup         unique strings only, batched as the pipeline does (`pipelines.embed.batches`)
  beam stage    the real `EmbedTexts` transform on the local runner: dedup, batch, encode, write the store
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def language_table_like(n: int, rng) -> list[str]:
    colors, shapes = ["red", "blue", "green", "yellow"], ["star", "moon", "cube", "pentagon"]
    dirs = ["left", "right", "top", "bottom"]
    instructions = [f"push the {c} {s} to the {d} of the board" for c in colors for s in shapes for d in dirs]
    weights = 1.0 / np.arange(1, len(instructions) + 1)
    return [instructions[i] for i in rng.choice(len(instructions), n, p=weights / weights.sum())]


def laion_like(n: int, rng) -> list[str]:
    words = ("a photo of the red blue old new small large dog cat house car street beach city tree people man woman "
             "child table chair kitchen sunset mountain river close up view vintage modern art poster logo white black "
             "wooden metal glass with on in at near under over for sale 2019 hd free stock image").split()
    captions = [" ".join(rng.choice(words, rng.integers(5, 21))) for _ in range(n)]
    for i in np.nonzero(rng.random(n) < 0.03)[0]:
        captions[i] = captions[int(rng.integers(0, n))]
    return captions


def encode_all(encoder, texts: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        encoder.encode([str(j) for j in range(len(chunk))], chunk)
    return time.perf_counter() - start


def encode_unique(encoder, texts: list[str], batch_size: int) -> float:
    from unisim.pipelines.embed import batches
    from unisim.schemas.record import text_key

    start = time.perf_counter()
    unique = {text_key(t): t for t in texts}
    for chunk in batches(unique.items(), batch_size):
        encoder.encode([k for k, _ in chunk], [t for _, t in chunk])
    return time.perf_counter() - start


def beam_stage(path: str, texts: list[str], batch_size: int) -> tuple[float, int]:
    import apache_beam as beam

    from unisim.pipelines.convert import pipeline_options
    from unisim.pipelines.embed import EmbedTexts, EncoderSettings
    from unisim.encoders.t5 import encoder_identity
    from unisim.schemas.record import text_key

    identity = encoder_identity(path, 64)
    with tempfile.TemporaryDirectory() as output:
        runner, options = pipeline_options([], "local")
        start = time.perf_counter()
        with beam.Pipeline(runner=runner, options=options) as p:
            summary, _ = (p | beam.Create([(text_key(t), t) for t in texts])
                          | EmbedTexts(output, "bench", EncoderSettings(path, batch_size=batch_size), 1024,
                                       identity))
        elapsed = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(output, f)) for f in os.listdir(output))
    return elapsed, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strings", type=int, default=4096)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--text_encoder", default=None, help="a real checkpoint instead of the random stand-ins")
    args = parser.parse_args()
    import torch

    from unisim.encoders.t5 import T5TextEncoder
    from unisim.samples import tiny_t5

    rng = np.random.default_rng(0)
    distributions = {"language_table": language_table_like(args.strings, rng), "laion": laion_like(args.strings, rng)}
    workdir = tempfile.mkdtemp(prefix="unisim-t5-bench-")
    corpus = [t for texts in distributions.values() for t in texts[:500]]
    if args.text_encoder:
        encoders = {"given": args.text_encoder}
    else:
        encoders = {"tiny": tiny_t5.write_tiny_t5(os.path.join(workdir, "tiny"), corpus=corpus),
                    "t5-small-shape": tiny_t5.write_tiny_t5(os.path.join(workdir, "small"), corpus=corpus, d_model=512,
                                                            num_layers=6, num_heads=8, d_ff=1024)}
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"{args.strings} strings per distribution, batch {args.batch_size}")
    for name, texts in distributions.items():
        print(f"  {name}: {len(set(texts))} unique of {len(texts)}")
    print(f"{'encoder':16s} {'distribution':15s} {'no dedup':>14s} {'dedup':>14s} {'beam stage':>14s} "
          f"{'store bytes/str':>16s}")
    for encoder_name, path in encoders.items():
        encoder = T5TextEncoder(path)
        for name, texts in distributions.items():
            encoder.encode(["w"], [texts[0]])  # warm-up
            no_dedup = encode_all(encoder, texts, args.batch_size)
            dedup = encode_unique(encoder, texts, args.batch_size)
            stage, size = beam_stage(path, texts, args.batch_size)
            n = len(texts)
            print(f"{encoder_name:16s} {name:15s} {n / no_dedup:11.0f} /s {n / dedup:11.0f} /s {n / stage:11.0f} /s "
                  f"{size / n:16.0f}")


if __name__ == "__main__":
    main()
