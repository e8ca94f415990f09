"""Serve a trained model to many environments over HTTP/JSON (simulator/serving/http.py; its client is
simulator/serving/client.py) and, with --grpc_port, over dm_env_rpc (simulator/serving/rpc.py). Both protocols share
one session pool, so concurrent steps from either are batched into one sampler call. No authentication: it binds
127.0.0.1 unless told otherwise.

    unisim serve --checkpoint runs/base --super_resolution runs/sr1 runs/sr2 --port 8470 --grpc_port 8471"""

from __future__ import annotations

import dataclasses

from unisim.cli.rollout import StageOptions, add_simulator_arguments, simulator_of
from unisim.schemas.options import from_flags, option


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    host: str = option("127.0.0.1", "IPv4 bind address (no authentication: keep it local unless a proxy guards it)")
    port: int = option(8470, "HTTP/JSON port; 0: any free port")
    grpc_port: int | None = option(None, "also serve dm_env_rpc (gRPC) on this port, from the same session pool; "
                                         "0: any free port")
    max_batch: int = option(32, "sessions per sampler call")
    batch_window_s: float = option(0.005, "after a step arrives, wait this long for others to batch with it")
    session_timeout_s: float = option(600.0, "idle sessions are dropped after this many seconds")
    max_sessions: int = option(1024, "sessions held at once")
    max_sessions_per_client: int = option(64, "sessions one client (its address, or its X-Unisim-Client token) may "
                                              "hold, so that one client cannot lock the others out")
    max_connections: int = option(256, "connections served at once; more are answered 503 and closed")
    read_timeout_s: float = option(30.0, "a connection that sends nothing for this long is closed")


def add_arguments(parser) -> None:
    add_simulator_arguments(parser, ServeOptions)


def run(args, _rest) -> int:
    from unisim.simulator.serving import http
    from unisim.simulator.serving.sessions import SessionPool

    stages, options = from_flags(StageOptions, args), from_flags(ServeOptions, args)
    simulator = simulator_of(stages, args, max_batch=options.max_batch)
    pool = SessionPool(simulator, batch_window_s=options.batch_window_s, session_timeout_s=options.session_timeout_s,
                       max_sessions=options.max_sessions, max_sessions_per_client=options.max_sessions_per_client)
    server = http.SimulatorServer(None, options.host, options.port, pool=pool,
                                  max_connections=options.max_connections,
                                  read_timeout_s=options.read_timeout_s).start()
    extra = []
    if options.grpc_port is not None:
        from unisim.simulator.serving.rpc import DmEnvRpcServer

        extra.append(DmEnvRpcServer(None, options.host, options.grpc_port, pool=pool,
                                    max_connections=options.max_connections).start())
    if options.host not in ("127.0.0.1", "localhost"):
        print(f"unisim serve: warning: listening on {options.host} without authentication", flush=True)
    print(f"unisim serve: {server.url} (frames {simulator.frames} × {simulator.output_size}, max_batch "
          f"{simulator.max_batch})" + "".join(f"; dm_env_rpc on {rpc.address}" for rpc in extra) + "; Ctrl-C stops",
          flush=True)
    http.serve_forever(server, also=extra)
    return 0
