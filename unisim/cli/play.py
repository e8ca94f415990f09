"""Try a trained model in the browser: a local page (simulator/serving/playground.py) that shows the current frame,
takes a text action or arrow-key control deltas, steps the simulator and plays the new frames, with reset and a choice
of start frame from a converted directory.

    unisim play --checkpoint runs/base --data demo-output/converted --port 8472   # open http://127.0.0.1:8472/

It is `unisim serve`'s HTTP server with the page added, so it binds 127.0.0.1 (no authentication) unless told
otherwise."""

from __future__ import annotations

import dataclasses

from unisim.cli.rollout import StageOptions, add_simulator_arguments, simulator_of
from unisim.schemas.options import from_flags, option


@dataclasses.dataclass(frozen=True)
class PlayOptions:
    data: str | None = option(None, "a converted directory (local or gs://) whose clips give the start frames; "
                                    "none: only the white text-only start", metavar="DIR")
    starts: int = option(8, "start frames offered (the first clips of --data)")
    control_step: float = option(0.5, "an arrow key moves its control dimension by this × half its training range")
    host: str = option("127.0.0.1", "IPv4 bind address (no authentication: keep it local)")
    port: int = option(8472, "port; 0: any free port")


def add_arguments(parser) -> None:
    add_simulator_arguments(parser, PlayOptions)


def run(args, _rest) -> int:
    from unisim.simulator.serving.http import serve_forever
    from unisim.simulator.serving.playground import serve_playground

    stages, options = from_flags(StageOptions, args), from_flags(PlayOptions, args)
    if options.starts < 1 or not options.control_step > 0:
        raise ValueError("--starts must be at least 1 and --control_step positive")
    simulator = simulator_of(stages, args, max_batch=4)
    server = serve_playground(simulator, options.data, host=options.host, port=options.port, starts=options.starts,
                              control_step=options.control_step)
    print(f"unisim play: open {server.url}/ (frames {simulator.frames} × {simulator.output_size}); Ctrl-C stops",
          flush=True)
    serve_forever(server)
    return 0
