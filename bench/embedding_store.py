"""The text-embedding store at T5-XXL's width: bytes per entry and error per stored dtype (issue 19, item 4).

    python bench/embedding_store.py [--texts 600] [--output FILE.json] [--workdir DIR] [--text_encoder PATH]

Encoder: without --text_encoder, a randomly initialised T5 encoder of t5-v1_1-xxl's width, d_model 4096, but 2
layers, 4 heads of 64 and d_ff 1024 so that it builds and runs in seconds on a CPU; its vocabulary is trained on
the corpus (`samples.tiny_t5`). An entry's size depends on the width and the token count only, not on depth or
weights; its quantization error depends on the values, so the error is also measured on the same outputs with
planted outlier channels (below). Token counts come from this small vocabulary, not T5's 32k one.

Corpus (deterministic): the captions of the image-text sample (`samples.image_text`), the tabletop world's
instructions bare, with the "language_table" prefix and with controls as text (`schemas.text.conditioning_text`),
and generated robot instructions and web-style captions; `--texts` of them in all.

Three sets of token vectors, each float32 [tokens, 4096], the reference every stored dtype is compared with:
  t5            the encoder's outputs (after T5's final RMS norm: rows of RMS about 1, no outliers)
  t5_outliers   the same with per-channel gains exp(N(0, 0.5)) and 6 fixed channels at 10–300× (trained T5-XXL
                encoders have a few large-magnitude channels; their real sizes could not be measured here)
  worst_planted Gaussian rows with 1–64 channels set to ±5…1000× the others' RMS: a sweep for the worst case
For each dtype: bytes per entry (the real `encode_entry` bytes; float32 and bfloat16 are not store layouts, so
theirs are the float16 entry's plus 2 or 0 bytes a value), bytes per token, per-token cosine to the reference
after decoding to float16 (what the trainer feeds) — min and mean — and decode time. "int8_block4096" is one
absmax scale per token at this width. The last line applies the bare rule — the smallest bytes whose min cosine
is >= 0.999 on all three sets — beside what the store writes (`STORED_DTYPE`; schemas/text_embeddings.py says why).

With --output, writes the figures as JSON; `bytes_per_token` (of the stored dtype, token id included),
`header_bytes` (magic, length and JSON header per entry, mean over the corpus) and
`array_record_bytes_per_entry` (the shard's own overhead per record) are what a capacity model needs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

DTYPES = ["float32", "float16", "bfloat16", "int8_block32", "int8_block64", "int8_block128", "int8_block256",
          "int8_block4096"]
MIN_COSINE = 0.999
CAPTION_TOKENS = 20  # the yardstick: a 20-token caption


def corpus(count: int, workdir: str) -> list[str]:
    """`count` distinct texts of the kinds the pipeline embeds (module docstring)."""
    import pyarrow.parquet as pq

    from unisim.samples import image_text, tabletop
    from unisim.schemas.text import ConditioningSpec, conditioning_text

    rng = np.random.default_rng(0)
    root = image_text.write_sample(os.path.join(workdir, "image_text"), num_images=64)
    texts = [c for name in sorted(os.listdir(root)) if name.endswith(".parquet")
             for c in pq.read_table(os.path.join(root, name), columns=["caption"]).column("caption").to_pylist()]
    instructions = [t.format(c) for t in tabletop.INSTRUCTION_TEMPLATES.values() for c in tabletop.BLOCK_COLORS]
    plain, with_controls = ConditioningSpec(domain_prefix="language_table"), \
        ConditioningSpec(domain_prefix="language_table", controls_as_text=True)
    texts += instructions + [conditioning_text(plain, t) for t in instructions]
    # Controls as text: 16 steps of 2-D actions about as large as the tabletop world's (±0.03 m a step).
    texts += [conditioning_text(with_controls, t, rng.normal(0, 0.02, (16, 2)), context_frames=4)
              for t in instructions for _ in range(2)]
    verbs = "pick up|put down|push|pull|slide|open|close|move|place|lift|rotate|stack|knock over|wipe".split("|")
    objects = ("the red cup|a blue sponge|the drawer|the green can|a wooden spoon|the top drawer|the apple|"
               "the coke can|a bag of chips|the white bowl|the towel|the microwave door|the pot lid").split("|")
    places = ("to the left|on the table|into the sink|next to the plate|off the counter|onto the shelf|"
              "near the window|in the middle|behind the box|towards the camera|").split("|")  # "" too: no place
    adjectives = "old|new|small|large|vintage|modern|bright|dark|cozy|rustic|minimal|colorful|snowy|sunlit".split("|")
    nouns = ("dog|cat|house|car|street|beach|city skyline|mountain lake|kitchen|bicycle|lighthouse|bookshelf|"
             "coffee mug|wedding dress|forest path|sports car|living room|garden").split("|")
    scenes = ("at sunset|in the rain|on a white background|seen from above|close up|in winter|at night|"
              "in a studio|on a wooden table|with flowers|for sale|stock photo|hd wallpaper|").split("|")
    texts = sorted(set(texts))
    generated: set[str] = set()
    while len(texts) + len(generated) < count:
        if rng.random() < 0.5:
            text = f"{rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}".strip()
        else:
            words = [str(rng.choice(adjectives)), str(rng.choice(nouns)), str(rng.choice(scenes))]
            if rng.random() < 0.4:  # longer captions, LAION-style run-ons
                words += ["and", str(rng.choice(adjectives)), str(rng.choice(nouns)), str(rng.choice(scenes))]
            text = " ".join(w for w in ["a", *words] if w)
        generated.add(text)
    return (texts + sorted(generated - set(texts)))[:count]


def build_encoder(workdir: str, texts: list[str]) -> str:
    from unisim.samples import tiny_t5

    path = os.path.join(workdir, "t5-4096")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        # Narrow attention (4 heads of 64) and FF: width 4096 is what sets the stored bytes; this keeps the
        # checkpoint at ~150 MB and a forward pass at milliseconds.
        tiny_t5.write_tiny_t5(path, corpus=texts, d_model=4096, num_layers=2, num_heads=4, d_kv=64, d_ff=1024)
    return path


def encode(path: str, texts: list[str], batch_size: int = 32):
    """Each text's entry with the encoder's float32 embedding, batched as the pipeline batches."""
    from unisim.pipelines.embed import batches
    from unisim.encoders.t5 import T5TextEncoder
    from unisim.schemas.record import text_key

    encoder = T5TextEncoder(path, max_tokens=64)
    entries = []
    for chunk in batches([(text_key(t), t) for t in texts], batch_size):
        entries += encoder.encode([k for k, _ in chunk], [t for _, t in chunk])
    return entries


def with_outliers(values: np.ndarray, rng) -> np.ndarray:
    """`values` with per-channel gains and 6 fixed outlier channels (module docstring)."""
    d = values.shape[1]
    gains = np.exp(rng.normal(0, 0.5, d))
    gains[rng.choice(d, 6, replace=False)] *= [10, 20, 30, 50, 100, 300]
    return (values * gains).astype(np.float32)


def worst_planted(rng, d: int = 4096, rows: int = 16) -> np.ndarray:
    parts = []
    for count in (1, 2, 4, 8, 16, 64):
        for size in (5, 10, 20, 50, 100, 200, 500, 1000):
            x = rng.standard_normal((rows, d)).astype(np.float32)
            channels = rng.choice(d, count, replace=False)
            x[:, channels] = size * np.sign(x[:, channels])
            parts.append(x)
    return np.concatenate(parts)


def decoded(values: np.ndarray, dtype: str) -> np.ndarray:
    """float16 [n, d] as the trainer would get `values` stored as `dtype`."""
    from unisim.schemas import text_embeddings as emb

    if dtype == "float32":
        return values.astype(np.float16)  # stored exactly, still fed as float16
    if dtype == "bfloat16":
        import ml_dtypes

        return values.astype(ml_dtypes.bfloat16).astype(np.float32).clip(-65504, 65504).astype(np.float16)
    entry = emb.TextEmbedding("k" * 32, "", values, np.zeros(len(values), np.int32))
    return emb.stored(entry, dtype).embedding


def cosines(reference: np.ndarray, dtype: str, rows: int = 2048) -> np.ndarray:
    out = []
    for i in range(0, len(reference), rows):  # chunks: the whole set in float64 would be GBs
        a = reference[i : i + rows].astype(np.float64)
        b = decoded(reference[i : i + rows], dtype).astype(np.float64)
        out.append((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))
    return np.concatenate(out)


def entry_bytes(entry, dtype: str) -> tuple[int, int]:
    """(bytes of the entry, bytes of its magic, length and JSON header)."""
    from unisim.schemas import text_embeddings as emb

    if dtype in ("float32", "bfloat16"):  # not store layouts: the float16 entry with 4 or 2 bytes a value
        total, header = entry_bytes(entry, "float16")
        extra = len(dtype) - len("float16")  # the header names the dtype
        return total + extra + entry.embedding.size * (2 if dtype == "float32" else 0), header + extra
    data = emb.encode_entry(entry, dtype)
    return len(data), 8 + int.from_bytes(data[4:8], "little")


def decode_seconds(entries, dtype: str) -> float | None:
    from unisim.schemas import text_embeddings as emb

    if dtype in ("float32", "bfloat16"):
        return None
    data = [emb.encode_entry(e, dtype) for e in entries]
    start = time.perf_counter()
    for d in data:
        emb.decode_entry(d)
    return (time.perf_counter() - start) / len(data)


def array_record_overhead(entries, dtype: str, workdir: str) -> float:
    """Bytes the ArrayRecord shard adds per entry (ARRAY_RECORD_OPTIONS: one record per chunk, uncompressed)."""
    from unisim.pipelines.output import write_shard
    from unisim.schemas import text_embeddings as emb

    data = [emb.encode_entry(e, dtype) for e in entries]
    count, size, _ = write_shard(data, os.path.join(workdir, "store.array_record"))
    return (size - sum(map(len, data))) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    parser.add_argument("--workdir", default=None, help="keeps the 4096-wide checkpoint between runs (default: temp)")
    parser.add_argument("--text_encoder", default=None, help="a real checkpoint instead of the random stand-in")
    args = parser.parse_args()
    from unisim.schemas import text_embeddings as emb

    workdir = args.workdir or tempfile.mkdtemp(prefix="unisim-embedding-store-")
    os.makedirs(workdir, exist_ok=True)
    texts = corpus(args.texts, workdir)
    path = args.text_encoder or build_encoder(workdir, texts)
    start = time.perf_counter()
    entries = encode(path, texts)
    encode_s = time.perf_counter() - start
    d_model = entries[0].embedding.shape[1]
    tokens = np.array([len(e.token_ids) for e in entries])
    rng = np.random.default_rng(1)
    t5 = np.concatenate([e.embedding for e in entries])
    sets = {"t5": t5, "t5_outliers": with_outliers(t5, rng), "worst_planted": worst_planted(rng, d_model)}
    print(f"d_model {d_model}; {len(texts)} texts, {tokens.sum()} tokens, {tokens.mean():.1f} tokens a text "
          f"(min {tokens.min()}, max {tokens.max()}, {sum(e.truncated for e in entries)} truncated at 64); "
          f"encoded in {encode_s:.1f} s; {len(sets['worst_planted'])} worst_planted rows")
    figures: dict[str, dict] = {}
    print(f"{'dtype':15s} {'bytes/entry':>11s} {'bytes/token':>11s} {'20-tok caption':>14s} "
          + " ".join(f"{name + ' cos min/mean':>27s}" for name in sets) + f" {'decode µs':>9s}")
    for dtype in DTYPES:
        sizes, headers = np.array([entry_bytes(e, dtype) for e in entries]).T
        per_token = float(np.mean((sizes - headers) / tokens))  # embedding, scales and token id: the same for all
        header = float(headers.mean())
        seconds = decode_seconds(entries[:200], dtype)
        row = {"bytes_per_entry": float(sizes.mean()), "bytes_per_token": per_token, "header_bytes": header,
               "bytes_per_20_token_caption": header + CAPTION_TOKENS * per_token, "cosine": {},
               "decode_us_per_entry": None if seconds is None else seconds * 1e6}
        for name, values in sets.items():
            c = cosines(values, dtype)
            row["cosine"][name] = {"min": float(c.min()), "mean": float(c.mean())}
        row["meets_bound"] = all(c["min"] >= MIN_COSINE for c in row["cosine"].values())
        figures[dtype] = row
        cos = " ".join(f"{c['min']:13.6f} /{c['mean']:12.6f}" for c in row["cosine"].values())
        print(f"{dtype:15s} {row['bytes_per_entry']:11.0f} {per_token:11.1f} {row['bytes_per_20_token_caption']:14.0f} "
              f"{cos} {'-' if seconds is None else f'{seconds * 1e6:.0f}':>9s}"
              + ("" if row["meets_bound"] else "  < 0.999"))
    passing = [d for d in DTYPES if figures[d]["meets_bound"]]
    smallest = min(passing, key=lambda d: figures[d]["bytes_per_token"])
    chosen = figures[emb.STORED_DTYPE]
    overhead = array_record_overhead(entries, emb.STORED_DTYPE, workdir)
    keys_bytes = 33  # a 32-hex-digit key and a newline in the .keys file
    per_caption = chosen["bytes_per_20_token_caption"] + overhead + keys_bytes
    print(f"stored dtype {emb.STORED_DTYPE}: {chosen['bytes_per_token']:.1f} bytes a token, header "
          f"{chosen['header_bytes']:.1f} bytes an entry (texts average "
          f"{np.mean([len(t.encode()) for t in texts]):.1f} bytes), ArrayRecord {overhead:.1f} bytes and keys file "
          f"{keys_bytes} bytes a record; a 20-token caption {per_caption / 1e3:.1f} kB on disk "
          f"(float16: {figures['float16']['bytes_per_20_token_caption'] + overhead + keys_bytes:.0f} B), "
          f"LAION-400M {400e6 * per_caption / 1e12:.1f} TB (float16 "
          f"{400e6 * (figures['float16']['bytes_per_20_token_caption'] + overhead + keys_bytes) / 1e12:.1f} TB)")
    print(f"smallest meeting cosine >= {MIN_COSINE} on every set: {smallest}"
          + ("" if smallest == emb.STORED_DTYPE else f" (the store writes {emb.STORED_DTYPE}: see its docstring)"))
    if args.output:
        result = {"d_model": d_model, "encoder": path if args.text_encoder else "random T5, d_model 4096, 2 layers",
                  "texts": len(texts), "tokens": int(tokens.sum()), "mean_tokens_per_text": float(tokens.mean()),
                  "mean_text_bytes": float(np.mean([len(t.encode()) for t in texts])),
                  "min_cosine_bound": MIN_COSINE, "stored_dtype": emb.STORED_DTYPE, "smallest_meeting_bound": smallest,
                  "bytes_per_token": chosen["bytes_per_token"], "header_bytes": chosen["header_bytes"],
                  "array_record_bytes_per_entry": overhead, "keys_bytes_per_entry": keys_bytes,
                  "bytes_per_20_token_caption": chosen["bytes_per_20_token_caption"],
                  "disk_bytes_per_20_token_caption": per_caption, "dtypes": figures}
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
