"""Try a trained model in the browser: a local page (simulator/serving/playground.py) that shows the current frame,
takes a text action or arrow-key control deltas, steps the simulator and plays the new frames, with reset and a choice
of start frame from a converted directory.

    unisim play --checkpoint runs/base --data demo-output/converted --port 8472   # open http://127.0.0.1:8472/

It is `unisim serve`'s HTTP server with the page added: it binds 127.0.0.1 unless told otherwise, and takes the same
tokens and TLS options (with tokens, open the page as /?access_token=TOKEN)."""

from __future__ import annotations

import dataclasses

from unisim.cli.rollout import StageOptions, add_simulator_arguments, simulator_of
from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class PlayOptions:
    data: str | None = option(None, "a converted directory (local or gs://) whose clips give the start frames; "
                                    "none: only the white text-only start", metavar="DIR")
    starts: int = option(8, "start frames offered (the first clips of --data)")
    control_step: float = option(0.5, "an arrow key moves its control dimension by this × half its training range")
    port: int = option(8472, "port; 0: any free port")


def add_arguments(parser) -> None:
    from unisim.simulator.serving.web import AccessOptions

    add_simulator_arguments(parser, PlayOptions)
    add_flags(parser.add_argument_group("access"), AccessOptions)


def run(args, _rest) -> int:
    from unisim.simulator.serving.playground import serve_playground
    from unisim.simulator.serving.web import AccessOptions, serve_forever

    stages, options = from_flags(StageOptions, args), from_flags(PlayOptions, args)
    access = from_flags(AccessOptions, args)
    if options.starts < 1 or not options.control_step > 0:
        raise ValueError("--starts must be at least 1 and --control_step positive")
    credentials = access.credentials()
    simulator = simulator_of(stages, args, max_batch=4)
    server = serve_playground(simulator, options.data, host=access.host, port=options.port, starts=options.starts,
                              control_step=options.control_step, credentials=credentials, insecure=access.insecure)
    token = "?access_token=TOKEN (a token of the token file)" if credentials.required else ""
    print(f"unisim play: open {server.url}/{token} (frames {simulator.frames} × {simulator.output_size}); Ctrl-C "
          "stops", flush=True)
    serve_forever(server)
    return 0
