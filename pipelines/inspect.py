"""`unisim inspect`: what a converted directory holds, read back from the shards themselves, and a contact sheet."""

from __future__ import annotations

import os
import tempfile
from collections import Counter

import cv2
import numpy as np

from unisim import fileio
from unisim.schemas import record as rec
from unisim.schemas.manifest import Manifest
from unisim.schemas.text_embeddings import TextEmbeddingStore, keys_path
from unisim.shards.reader import (ShardIntegrityError, iter_dead_letter, iter_records, localize, read_manifest,
                                  shard_problems)

MAX_TEXTS = 50


def _dead_letter_summary(directory: str, manifest: Manifest) -> dict:
    """What the dead-letter files hold, read back, and whether it is what the manifest counts."""
    reasons = Counter(r.reason for r in iter_dead_letter(directory, manifest))
    return {"files": len(manifest.dead_letter), "rejections": sum(reasons.values()),
            "reasons": dict(sorted(reasons.items())), "matches_manifest": dict(reasons) == manifest.rejected_reasons}


def summarize(directory: str, verify: bool = False) -> dict:
    """The `inspect --json` object (keys documented in docs/datasets.md). Raises `ShardIntegrityError` listing every
    shard that is not what the manifest records (sizes and counts always; content hashes with `verify`)."""
    manifest = read_manifest(directory)
    problems = shard_problems(directory, manifest.shards + manifest.text_embeddings, content=verify)
    if problems:
        raise ShardIntegrityError(f"{directory}: {len(problems)} shard(s) are not what the manifest records:\n  "
                                  + "\n  ".join(problems))
    datasets: Counter = Counter()
    texts: list[str] = []
    seen_texts: set[str] = set()
    lengths: list[int] = []
    token_min, token_max, dims = None, None, 0
    text_keys: Counter = Counter()
    for record in iter_records(directory, manifest):
        datasets[record.dataset] += 1
        text_keys[record.text_key] += 1
        lengths.append(record.num_frames)
        if record.text not in seen_texts and len(texts) < MAX_TEXTS:
            seen_texts.add(record.text)
            texts.append(record.text)
        if record.control_tokens.size:
            dims = record.control_tokens.shape[1]
            lo, hi = int(record.control_tokens.min()), int(record.control_tokens.max())
            token_min = lo if token_min is None else min(token_min, lo)
            token_max = hi if token_max is None else max(token_max, hi)
    records = sum(datasets.values())
    return {
        **_text_summary(directory, manifest, text_keys, records),
        "directory": directory,
        "schema_version": manifest.schema_version,
        "records": records,
        "manifest_records": manifest.records,
        "datasets": dict(sorted(datasets.items())),
        "source_episodes": manifest.source_episodes,
        "rejected": manifest.rejected,
        "rejected_reasons": manifest.rejected_reasons,
        "dead_letter": _dead_letter_summary(directory, manifest),
        "frame_shape": list(manifest.frame_shape),
        "fps": manifest.fps,
        "fps_values": manifest.fps_values,
        "frames_per_record": [min(lengths), max(lengths)] if lengths else [0, 0],
        "context_frames": manifest.context_frames,
        "action_texts": texts,
        "control_tokens": None if token_min is None else {"min": token_min, "max": token_max, "dims": dims},
        "control_stats": manifest.control_stats.to_json() if manifest.control_stats else None,
        "shards": len(manifest.shards),
        "bytes": sum(s.bytes for s in manifest.shards),
        "verified": "sizes, record counts and content hashes" if verify else "sizes and record counts",
    }


def _text_summary(directory: str, manifest: Manifest, text_keys: Counter, records: int) -> dict:
    """Text-embedding figures; every record's text key is looked up, so a missing embedding is counted."""
    embedding_bytes = sum(s.bytes for s in manifest.text_embeddings)
    summary = {
        "text_encoder": manifest.text_encoder.to_json() if manifest.text_encoder else None,
        "conditioning": manifest.conditioning,
        "unique_texts": manifest.unique_texts, "encoder_calls": manifest.encoder_calls,
        "texts_truncated": manifest.texts_truncated, "embedding_shards": len(manifest.text_embeddings),
        "embedding_bytes": embedding_bytes, "embedding_bytes_per_record": embedding_bytes / records if records else 0.0,
        "records_without_embedding": 0, "inline_float32_bytes_per_record": 0.0,
    }
    if not manifest.text_encoder:
        return summary
    with tempfile.TemporaryDirectory(prefix="unisim-inspect-") as scratch:  # every key is looked up: fetch all
        files = [(s.path, s.bytes) for s in manifest.text_embeddings]
        local, _ = localize(directory, manifest, files + [(keys_path(path), None) for path, _ in files], scratch)
        store = TextEmbeddingStore.from_manifest(local, manifest)
        inline = 0
        for key, count in text_keys.items():
            if key == "":
                continue
            if key not in store:
                summary["records_without_embedding"] += count
                continue
            n, d = store.lookup(key).embedding.shape
            inline += count * n * d * 4
        store.close()
    summary["inline_float32_bytes_per_record"] = inline / records if records else 0.0
    return summary


def contact_sheet(directory: str, path: str, clips: int = 6, frames_per_row: int = 8) -> str:
    """Writes a PNG: one row per sample clip (spread over the directory), its action text above it."""
    manifest = read_manifest(directory)
    total = manifest.records
    if total == 0:
        raise ValueError(f"{directory} holds no records to preview")
    wanted = set(np.linspace(0, total - 1, min(clips, total)).round().astype(int).tolist())
    h, w = manifest.frame_height, manifest.frame_width
    label_h = 22
    rows = []
    for i, record in enumerate(iter_records(directory, manifest)):
        if i > max(wanted):
            break  # the remaining shards hold no wanted row: do not read (or, remotely, copy) them
        if i not in wanted:
            continue
        frames = rec.decode_frames(record)
        picks = np.linspace(0, len(frames) - 1, min(frames_per_row, len(frames))).round().astype(int)
        row = np.full((label_h + h, frames_per_row * w, 3), 255, np.uint8)
        for j, f in enumerate(picks):
            row[label_h:, j * w : (j + 1) * w] = frames[f]
            if f < record.context_frames:  # mark history frames with a grey bar
                row[label_h : label_h + 4, j * w : (j + 1) * w] = 128
        label = f"{record.key}  [{record.dataset}]  {record.text}"[:160]
        cv2.putText(row, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(row)
    sheet = cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError("could not encode the contact sheet")
    if not fileio.is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileio.publish(png.tobytes(), path)
    return path
