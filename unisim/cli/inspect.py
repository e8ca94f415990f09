"""Summarise a converted directory: records, rejections (and whether the dead-letter files hold what the manifest
counts), frames, control tokens, texts and their embeddings; optionally a contact sheet of sample clips."""

from __future__ import annotations

import dataclasses
import json

from unisim.cli import plural
from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class InspectOptions:
    json: bool = option(False, "print one JSON object instead of the summary")
    verify: bool = option(False, "also recompute every shard's SHA-256 against the manifest (sizes and record "
                                 "counts are always checked)")
    preview: str | None = option(None, "write a contact sheet of sample clips here", metavar="FILE.png")


def add_arguments(parser) -> None:
    parser.add_argument("directory", help="a `unisim convert` output directory (local or gs://)")
    add_flags(parser, InspectOptions)


def run(args, _rest) -> int:
    from unisim.pipelines import inspect as insp

    options = from_flags(InspectOptions, args)
    summary = insp.summarize(args.directory, verify=options.verify)
    if options.preview:
        summary["preview"] = insp.contact_sheet(args.directory, options.preview)
    if options.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    images = tuple(summary["frames_per_record"]) == (1, 1)  # single-image records: the sources were images
    print(f"{summary['directory']}: schema v{summary['schema_version']}, {plural(summary['records'], 'record')} from "
          f"{plural(summary['source_episodes'], 'source image' if images else 'source episode')} in "
          f"{plural(summary['shards'], 'shard')} ({summary['bytes']:,} bytes)")
    print(f"  datasets: {summary['datasets']}")
    print(f"  rejected: {summary['rejected']} {summary['rejected_reasons']}")
    dead = summary["dead_letter"]
    counted = "as the manifest counts" if dead["matches_manifest"] else f"NOT as the manifest counts: {dead['reasons']}"
    print(f"  dead letter: {plural(dead['rejections'], 'rejection')} in {plural(dead['files'], 'file')}, {counted}")
    rates = f"{summary['fps']} fps" if summary["fps"] else f"{', '.join(map(str, summary['fps_values']))} fps"
    print(f"  frames: {summary['frame_shape']} at {rates}, {summary['frames_per_record'][0]}–"
          f"{summary['frames_per_record'][1]} per record, {summary['context_frames']} context")
    print(f"  control tokens: {summary['control_tokens']}")
    encoder = summary["text_encoder"]
    identity = (f"encoder {encoder['fingerprint'][:12]} (d_model {encoder['d_model']}) from {encoder['path']}"
                if encoder else "no text encoder")
    print(f"  texts: {summary['unique_texts']} unique, {summary['encoder_calls']} encoder calls, "
          f"{summary['texts_truncated']} truncated; embeddings {summary['embedding_bytes_per_record']:.0f} "
          f"bytes/record; {identity}")
    texts = summary["action_texts"]
    print(f"  action texts ({len(texts)} shown): " + "; ".join(texts[:10]) + (" …" if len(texts) > 10 else ""))
    if options.preview:
        print(f"  preview: {summary['preview']}")
    return 0
