"""`unisim` — the command line. Each command is a module of this package: its options declared once, as a dataclass
whose fields carry their help (`schemas.options`), the flags generated from it, and a thin call into the library.

    unisim adapters                                   the dataset adapters, their controls and options
    unisim convert --dataset NAME --source PATH --output DIR [options] [Beam options, e.g. --runner=DataflowRunner …]
    unisim inspect DIR [--json] [--preview FILE.png]
    unisim view DIR [DIR …] [--port 8473]              a page: manifests, rejections, records playing, controls
    unisim sample tabletop|tiny_t5|activity_video|image_text --output DIR
    unisim demo [--workdir DIR]                       the whole chain on built-in samples
    unisim train --config trainer/configs/tiny.py --workdir DIR [--mixture SPEC] [--config.key=value …]
    unisim rollout --checkpoint DIR --image FILE --actions "a1" "a2" … --output out.gif|out.mp4
    unisim serve --checkpoint DIR [--port 8470] [--grpc_port 8471] [--host H --auth_token_file F --tls_cert C …]
    unisim play --checkpoint DIR [--data CONVERTED_DIR] [--port 8472]
    unisim eval --checkpoint DIR --data HELD_OUT_CLIPS [--history_ablation DIR] [--output eval.json]

`unisim COMMAND --help` lists every option with its default. A mistake in what you gave (a flag, a path, a config)
is one line and exit status 2; add `--debug` (or set UNISIM_DEBUG=1) for its traceback. Anything else is a bug of
ours: it prints its traceback and asks you to report it (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name → (module of this package, one line of help). A module has add_arguments(parser) and run(args, rest) → exit
# status; only the chosen command's module is imported (the others would cost their imports: Beam, JAX, torch).
COMMANDS = {
    "adapters": ("adapters", "list the dataset adapters, their controls and options"),
    "convert": ("convert", "convert a dataset's official release into clip shards"),
    "inspect": ("inspect", "summarise a converted directory (and check its dead letter)"),
    "view": ("view", "browse converted directories in a local web page: manifests, rejections, records playing"),
    "sample": ("sample", "write built-in sample data in an official format"),
    "demo": ("demo", "the whole chain on built-in samples: convert → train → rollouts → eval → report.html"),
    "train": ("train", "train a model stage (base or super-resolution)"),
    "rollout": ("rollout", "roll a trained model out through actions into a GIF or MP4"),
    "serve": ("serve", "serve a trained model to many environments over HTTP (and dm_env_rpc over gRPC)"),
    "play": ("play", "a local web page to try a trained model: start frames, text or arrow-key actions"),
    "eval": ("evaluate", "action-following error, PSNR, SSIM and FVD* on held-out tabletop clips"),
}


def plural(count: int, noun: str) -> str:
    """'1 shard', '2 shards'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


REPORT = "docs/development.md, 'Reporting a bug'"  # what to do with a bug's traceback
DEBUG_ENV = "UNISIM_DEBUG"  # set to 1 (or pass --debug) for the full traceback of a user error too


def _users_mistake(error: BaseException) -> bool:
    """True for what a user can fix from a one-line message: a `UserError`, an OSError (a path, a disk, a network),
    or a ValueError that the project's own code raised (its message is written for the user). Anything else —
    KeyError, TypeError, a ValueError from inside numpy or JAX — is a bug of ours."""
    from unisim.schemas.errors import UserError

    if isinstance(error, (UserError, OSError)):
        return True
    if type(error) is ValueError or (isinstance(error, ValueError) and type(error).__module__.startswith("unisim")):
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("unisim")
    return False


def _quiet_tensorflow() -> None:
    # TensorFlow only reads TFDS sources here; its start-up banners (also printed by every local worker process,
    # which inherits this environment) are noise. oneDNN changes only float op numerics, which decoding never uses.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """(the parser of `unisim NAME`, its module)."""
    module = importlib.import_module(f"unisim.cli.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"unisim {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return parser, module


def _top_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="unisim", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, about) in COMMANDS.items():
        sub.add_parser(name, help=about, add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        if not argv or argv[0] in ("-h", "--help"):
            top.print_help()
            return 0 if argv else 2
        top.error(f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})")
    name = argv[0]
    parser, module = command_parser(name)
    if hasattr(module, "expand_argv"):  # `convert --recipe NAME`: the recipe's flags, recorded as they ran
        try:
            argv = [name, *module.expand_argv(argv[1:])]
        except ValueError as e:
            parser.error(str(e))
    # Only `convert` (Beam's own flags) and `train` (--config.key=value overrides) take flags they do not declare.
    args, rest = parser.parse_known_args(argv[1:])
    args.argv = argv  # the command as given (recorded in a manifest); not an option of any command
    if rest and not getattr(module, "PASSES_UNKNOWN_FLAGS", False):
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        return module.run(args, rest)
    except Exception as e:
        if _users_mistake(e) and not debug:  # one line: what to change
            print(f"unisim {name}: error: {e}", file=sys.stderr)
            return 2
        import traceback

        traceback.print_exc()
        if _users_mistake(e):
            return 2
        print(f"unisim {name}: internal error ({type(e).__name__}): this is a bug in unisim, not in what you gave it. "
              f"Please report it with the traceback above and the command line ({REPORT}).", file=sys.stderr)
        return 1
