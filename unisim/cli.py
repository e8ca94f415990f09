"""`unisim` — the command line: a thin layer over adapters/, pipelines/ and samples/.

    unisim adapters
    unisim convert --dataset NAME --source PATH --output DIR [options] [Beam options, e.g. --runner=DataflowRunner …]
    unisim inspect DIR [--json] [--preview FILE.png]
    unisim sample tabletop --output DIR [--episodes N] [--seed S]
    unisim sample tiny_t5 --output DIR          (a random stand-in text encoder; see README)
    unisim demo [--workdir DIR]
    unisim train --config trainer/configs/tiny.py --workdir DIR [--mixture SPEC] [--config.key=value …]
    unisim rollout --checkpoint DIR --image FILE --actions "a1" "a2" … --output out.gif|out.mp4
    unisim serve --checkpoint DIR [--port 8470]
    unisim eval --checkpoint DIR --data HELD_OUT_CLIPS [--history_ablation DIR] [--output eval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time


def _quiet_tensorflow() -> None:
    # TensorFlow only reads TFDS sources here; its start-up banners (also printed by every local worker process,
    # which inherits this environment) are noise. oneDNN changes only float op numerics, which decoding never uses.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _convert_parser(sub) -> None:
    from unisim.schemas.controls import DEFAULT_SAMPLE_ROWS  # numpy only

    p = sub.add_parser("convert", help="convert a dataset's official release into clip shards",
                       description="Convert a dataset into ArrayRecord clip shards + manifest.json + dead-letter files (rejected-*.jsonl). "
                                   "Unrecognised --flags are passed to Beam (e.g. --project, --region, --temp_location, "
                                   "--setup_file=./setup.py for Dataflow).")
    p.add_argument("--dataset", required=True, help="adapter name (see `unisim adapters`)")
    p.add_argument("--source", required=True, help="the release's directory (local or gs://)")
    p.add_argument("--output", required=True, help="output directory (local or gs://); must be new, empty, or a previous output")
    p.add_argument("--split", default=None, help="one split only (default: all)")
    p.add_argument("--adapter_option", action="append", default=[], metavar="KEY=VALUE",
                   help="an adapter option (repeatable; see `unisim adapters`), e.g. fps=3 or "
                        "actions=action/world_vector,action/rotation_delta")
    p.add_argument("--adapter_config", metavar="FILE.json", default=None,
                   help="adapter options as a JSON object (local or gs://); --adapter_option overrides its keys")
    p.add_argument("--fps", type=float, default=None, help="target frame rate (default: keep the source rate)")
    p.add_argument("--fit_spans", action="store_true",
                   help="annotated actions (ssv2, ego4d, epic_kitchens, video_captions): spread each clip's frames "
                        "over the whole annotated span (rate varies per record) instead of centring it at --fps")
    p.add_argument("--frames_per_clip", type=int, default=20, help="frames per record, history included (default 20)")
    p.add_argument("--context_frames", type=int, default=4, help="history frames overlapping the previous clip (default 4)")
    p.add_argument("--height", type=int, default=192, help="stored frame height (default 192)")
    p.add_argument("--width", type=int, default=320, help="stored frame width (default 320)")
    p.add_argument("--fit", choices=("crop", "pad"), default="crop", help="fit to the stored size by centre crop or padding")
    p.add_argument("--interpolation", choices=("area", "linear"), default="area", help="resize filter (see README)")
    p.add_argument("--image_format", choices=("jpeg", "png"), default="jpeg")
    p.add_argument("--jpeg_quality", type=int, default=95)
    p.add_argument("--records_per_shard", type=int, default=256)
    p.add_argument("--low_percentile", type=float, default=1.0, help="control bound percentile (default 1)")
    p.add_argument("--high_percentile", type=float, default=99.0, help="control bound percentile (default 99)")
    p.add_argument("--stats_sample_rate", type=float, default=1.0, help="fraction of control rows for statistics")
    p.add_argument("--stats_max_rows", type=int, default=DEFAULT_SAMPLE_ROWS,
                   help="control rows the percentiles are exact up to; above, a deterministic hash-chosen sample of "
                        "this many (bounded memory; rank error in schemas/controls.py)")
    g = p.add_argument_group("text actions (see README, 'Text conditioning')")
    g.add_argument("--text_encoder", metavar="PATH", default=None,
                   help="T5 checkpoint directory in transformers format, local or gs:// (default: none, texts are "
                        "written and counted but not embedded)")
    g.add_argument("--text_max_tokens", type=int, default=64, help="encoder tokens per text, EOS included (default 64)")
    g.add_argument("--text_batch_size", type=int, default=32, help="texts per encoder forward pass (default 32)")
    g.add_argument("--text_encoder_device", default="cpu", help="torch device for the encoder, e.g. cuda (default cpu)")
    g.add_argument("--text_encoder_threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    g.add_argument("--domain_prefix", default=None,
                   help="identifier prepended to every action (default: the dataset name; '' for none)")
    g.add_argument("--controls_as_text", choices=("auto", "on", "off"), default="auto",
                   help="append the clip's controls as text (auto: when the dataset has controls)")
    g.add_argument("--controls_text_steps", type=int, default=4, help="segments the controls text summarises (default 4)")
    g.add_argument("--controls_text_decimals", type=int, default=2, help="decimals in the controls text (default 2)")
    g.add_argument("--max_text_chars", type=int, default=2048,
                   help="longer action texts are rejected as text_too_long (default 2048)")
    p.add_argument("--runner", default="local", help="'local' (FnApiRunner, no downloads) or a Beam runner, e.g. DataflowRunner")
    p.add_argument("--clip_threads", type=int, default=None,
                   help="threads decoding, resizing and encoding inside each worker (default: --direct_num_workers "
                        "on the local runner, 1 on others, whose workers already run one per core)")
    p.add_argument("--direct_num_workers", type=int, default=1,
                   help="local runs: use this many cores, as clip threads in one Beam worker (default 1)")
    p.add_argument("--worker_processes", type=int, default=1,
                   help="local runs: N >= 2 runs N Beam SDK worker processes (FnApiRunner multi_processing), the "
                        "same bytes as one; 1 is one worker in this process (default 1)")


def adapter_options(config_file: str | None, pairs: list[str]) -> dict:
    """--adapter_config's JSON object, then each --adapter_option KEY=VALUE on top of it."""
    options: dict = {}
    if config_file:
        from unisim import fileio

        try:
            options = json.loads(fileio.read_text(config_file))
        except json.JSONDecodeError as e:
            raise ValueError(f"--adapter_config {config_file}: not JSON ({e})") from None
        if not isinstance(options, dict):
            raise ValueError(f"--adapter_config {config_file}: expected a JSON object of options")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--adapter_option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options


def convert(args, beam_args: list[str], argv: list[str]) -> int:
    from unisim.pipelines import convert as conv
    from unisim.pipelines.embed import EncoderSettings
    from unisim.pipelines.frames import FrameSpec

    encoder = None
    if args.text_encoder:
        encoder = EncoderSettings(path=args.text_encoder, max_tokens=args.text_max_tokens,
                                  batch_size=args.text_batch_size, device=args.text_encoder_device,
                                  threads=args.text_encoder_threads)
    text = conv.TextOptions(
        domain_prefix=args.domain_prefix, controls_as_text={"auto": None, "on": True, "off": False}[args.controls_as_text],
        controls_text_steps=args.controls_text_steps, controls_text_decimals=args.controls_text_decimals,
        max_text_chars=args.max_text_chars, encoder=encoder)
    config = conv.ConvertConfig(
        dataset=args.dataset, source=args.source, output=args.output, split=args.split,
        adapter_options=adapter_options(args.adapter_config, args.adapter_option), fps=args.fps, fit_spans=args.fit_spans,
        frames_per_clip=args.frames_per_clip, context_frames=args.context_frames,
        frame=FrameSpec(height=args.height, width=args.width, fit=args.fit, interpolation=args.interpolation,
                        image_format=args.image_format, jpeg_quality=args.jpeg_quality),
        records_per_shard=args.records_per_shard, low_percentile=args.low_percentile,
        high_percentile=args.high_percentile, stats_sample_rate=args.stats_sample_rate,
        stats_max_rows=args.stats_max_rows, text=text)
    if encoder is None:
        print("note: no --text_encoder: conditioning texts are written and counted but not embedded; the trainer "
              "refuses directories without embeddings", file=sys.stderr)
    start = time.monotonic()
    threads = args.clip_threads or (args.direct_num_workers if args.runner in conv.LOCAL_RUNNERS else 1)
    result = conv.run(config, beam_args, runner=args.runner, clip_threads=threads, command=shlex.join(["unisim", *argv]),
                      worker_processes=args.worker_processes)
    if isinstance(result, conv.DryRun):
        top = sorted({step.split("/")[0] for step in result.steps})
        print(f"dry run: built the {result.runner} job for {result.units} work units in {time.monotonic() - start:.1f} "
              f"s; nothing submitted, nothing written to {args.output}\nsteps: {', '.join(top)} "
              f"({len(result.steps)} transforms)\nworkers would install: "
              + (", ".join(result.staged) or "(nothing staged: give --setup_file ./setup.py)"))
        return 0
    manifest, counters = result
    elapsed = time.monotonic() - start
    frames = counters.get("frames_encoded", 0)
    print(f"converted {manifest.source_episodes} source episodes → {manifest.records} records in "
          f"{len(manifest.shards)} shards, {manifest.rejected} rejected {manifest.rejected_reasons or ''}")
    print(f"{elapsed:.1f} s: {manifest.source_episodes / elapsed:.2f} episodes/s, {frames / elapsed:.1f} frames/s "
          f"({frames} frames encoded, {threads} clip thread(s))")
    if manifest.text_encoder:
        print(f"texts: {manifest.unique_texts} unique, {manifest.encoder_calls} through the encoder "
              f"({manifest.texts_truncated} truncated at {args.text_max_tokens} tokens), "
              f"encoder {manifest.text_encoder['fingerprint'][:12]} from {manifest.text_encoder['path']}")
    mapping = manifest.adapter.get("mapping")
    if mapping:
        print(f"read: image {mapping['image']}, text {mapping['text'] or '(none)'}, actions "
              f"{', '.join(mapping['actions']) or '(none)'} at {mapping['fps']} Hz"
              + (f", episode id {mapping['episode_id']}" if mapping["episode_id"] else ""))
    print(f"output: {args.output}")
    return 0


def inspect(args) -> int:
    from unisim.pipelines import inspect as insp

    summary = insp.summarize(args.directory)
    if args.preview:
        summary["preview"] = insp.contact_sheet(args.directory, args.preview)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"{summary['directory']}: schema v{summary['schema_version']}, {summary['records']} records "
          f"from {summary['source_episodes']} source episodes in {summary['shards']} shards ({summary['bytes']} bytes)")
    print(f"  datasets: {summary['datasets']}")
    print(f"  rejected: {summary['rejected']} {summary['rejected_reasons']}")
    dead = summary["dead_letter"]
    print(f"  dead letter: {dead['rejections']} rejections in {dead['files']} files, "
          + ("as the manifest counts" if dead["matches_manifest"] else f"NOT as the manifest counts: {dead['reasons']}"))
    rates = f"{summary['fps']} fps" if summary["fps"] else f"{', '.join(map(str, summary['fps_values']))} fps"
    print(f"  frames: {summary['frame_shape']} at {rates}, {summary['frames_per_record'][0]}–"
          f"{summary['frames_per_record'][1]} per record, {summary['context_frames']} context")
    print(f"  control tokens: {summary['control_tokens']}")
    encoder = summary["text_encoder"]
    print(f"  texts: {summary['unique_texts']} unique, {summary['encoder_calls']} encoder calls, "
          f"{summary['texts_truncated']} truncated; embeddings {summary['embedding_bytes_per_record']:.0f} bytes/record; "
          + (f"encoder {encoder['fingerprint'][:12]} (d_model {encoder['d_model']}) from {encoder['path']}"
             if encoder else "no text encoder"))
    texts = summary["action_texts"]
    print(f"  action texts ({len(texts)} shown): " + "; ".join(texts[:10]) + (" …" if len(texts) > 10 else ""))
    if args.preview:
        print(f"  preview: {summary['preview']}")
    return 0


def adapters(_args) -> int:
    import dataclasses

    from unisim.adapters import registry

    for name, cls in registry.all_adapters().items():
        controls = ", ".join(cls.control_names) or ("set by its options" if dataclasses.fields(cls.Options) else "none")
        print(f"{name:16s} {cls.description}\n{'':16s} controls: {controls}")
        for field in dataclasses.fields(cls.Options):
            about = field.metadata.get("help", "")
            default = "" if "default" in about else f" (default {field.default!r})"
            print(f"{'':16s} --adapter_option {field.name}=…{default}: {about}")
    return 0


def sample(args) -> int:
    if args.world == "tiny_t5":
        from unisim.samples import tiny_t5

        print(tiny_t5.write_tiny_t5(args.output, corpus=_demo_corpus(), seed=args.seed))
        return 0
    if args.world == "activity_video":  # Something-Something V2 layout; --episodes videos
        from unisim.samples import activity_video

        print(activity_video.write_sample(args.output, num_videos=args.episodes, seed=args.seed))
        return 0
    if args.world == "image_text":  # img2dataset webdataset layout; --episodes images
        from unisim.samples import image_text

        print(image_text.write_sample(args.output, num_images=args.episodes, seed=args.seed))
        return 0
    from unisim.samples import tabletop

    path = tabletop.write_sample(args.output, num_episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
                                 workers=args.workers)
    print(path)
    return 0


def _demo_corpus() -> list[str]:
    """The tabletop's instructions, with its dataset name as domain prefix: the stand-in encoder's vocabulary."""
    from unisim.samples import tabletop

    return [f"{tabletop.SAMPLE_NAME}: " + template.format(color) for template in tabletop.INSTRUCTION_TEMPLATES.values()
            for color in tabletop.BLOCK_COLORS]


def demo(args) -> int:
    """The whole chain on built-in samples: see unisim/demo.py."""
    from unisim import demo as demo_run

    return demo_run.run(args.workdir, episodes=args.episodes, held_out_episodes=args.heldout_episodes,
                        budget_minutes=args.budget_minutes, steps=args.steps,
                        clip_threads=args.direct_num_workers, text_encoder=args.text_encoder)


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="unisim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _convert_parser(sub)
    p = sub.add_parser("inspect", help="summarise a converted directory")
    p.add_argument("directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--preview", metavar="FILE.png", help="write a contact sheet of sample clips")
    sub.add_parser("adapters", help="list the dataset adapters")
    p = sub.add_parser("sample", help="generate built-in sample data")
    p.add_argument("world", choices=("tabletop", "tiny_t5", "activity_video", "image_text"))
    p.add_argument("--output", required=True)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_steps", type=int, default=30)
    p.add_argument("--workers", type=int, default=1, help="tabletop: processes simulating episodes")
    p = sub.add_parser("demo", help="samples in 3 formats → convert → mixture → train tiny → rollouts → eval → "
                       "report.html")
    p.add_argument("--workdir", default=os.environ.get("DEMO_OUT", "demo-output"))
    p.add_argument("--episodes", type=int, default=200, help="tabletop training episodes")
    p.add_argument("--heldout_episodes", type=int, default=24, help="tabletop held-out episodes (another seed)")
    p.add_argument("--budget_minutes", type=float, default=4.0, help="training wall time of each model (default 4)")
    p.add_argument("--steps", type=int, default=None, help="also stop each model at this step (smoke runs)")
    p.add_argument("--direct_num_workers", type=int, default=1)  # 2 clip threads gained 8 % on the tabletop sample (README)
    p.add_argument("--text_encoder", default=None, help="T5 checkpoint (default: write the tiny random stand-in)")
    sub.add_parser("train", help="train a model stage (flags: unisim train --help)", add_help=False)
    sub.add_parser("rollout", help="roll a trained model out through actions into a GIF/MP4 (unisim rollout --help)",
                   add_help=False)
    sub.add_parser("serve", help="serve a trained model to many environments over HTTP (unisim serve --help)",
                   add_help=False)
    sub.add_parser("eval", help="action-following error, PSNR/SSIM, FVD* on held-out tabletop clips "
                   "(unisim eval --help)", add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    modules = {"rollout": "rollout", "serve": "server", "eval": "evaluate"}
    if argv[:1] and argv[0] in modules:  # their own argument parsers
        import importlib

        return importlib.import_module(f"unisim.simulator.{modules[argv[0]]}").main(argv[1:])
    if argv[:1] == ["train"]:  # absl/ml_collections flags (--config.key=value), parsed by the trainer itself
        from unisim.trainer import train

        try:
            return train.main(argv[1:])
        except (FileNotFoundError, ValueError, FloatingPointError) as e:
            print(f"unisim train: error: {e}", file=sys.stderr)
            return 2
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "convert":
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        if args.command == "convert":
            return convert(args, rest, argv)
        return {"inspect": inspect, "adapters": adapters, "sample": sample, "demo": demo}[args.command](args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        print(f"unisim {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
