"""Serve a trained model to many environments over HTTP/JSON (simulator/serving/http.py; its client is
simulator/serving/client.py) and, with --grpc_port, over dm_env_rpc (simulator/serving/rpc.py). Both protocols share
one session pool, so concurrent steps from either are batched into one sampler call. It binds 127.0.0.1 unless told
otherwise; another address needs bearer tokens (--auth_token_file or $UNISIM_AUTH_TOKEN), checked on every HTTP
route and gRPC call, or --insecure; --tls_cert/--tls_key make both HTTPS and TLS (simulator/serving/web.py).

    unisim serve --checkpoint runs/base --super_resolution runs/sr1 runs/sr2 --port 8470 --grpc_port 8471
    unisim serve --checkpoint runs/base --host 0.0.0.0 --auth_token_file tokens.txt \
        --tls_cert cert.pem --tls_key key.pem"""

from __future__ import annotations

import dataclasses

from unisim.cli.rollout import StageOptions, add_simulator_arguments, simulator_of
from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    port: int = option(8470, "HTTP/JSON port; 0: any free port")
    grpc_port: int | None = option(None, "also serve dm_env_rpc (gRPC) on this port, from the same session pool; "
                                         "0: any free port")
    max_batch: int = option(32, "sessions per sampler call")
    batch_window_s: float = option(0.005, "after a step arrives, wait this long for others to batch with it")
    session_timeout_s: float = option(600.0, "idle sessions are dropped after this many seconds")
    max_sessions: int = option(1024, "sessions held at once")
    max_sessions_per_client: int = option(64, "sessions one client may hold, so that one client cannot lock the "
                                              "others out (a client: its token's name with --auth_token_file, else "
                                              "its X-Unisim-Client header, else its address)")
    max_connections: int = option(256, "connections served at once; more are answered 503 and closed")
    read_timeout_s: float = option(30.0, "an HTTP connection or a gRPC stream that sends nothing for this long is "
                                         "closed (a stream's worlds are destroyed)")


def add_arguments(parser) -> None:
    from unisim.simulator.serving.web import AccessOptions

    add_simulator_arguments(parser, ServeOptions)
    add_flags(parser.add_argument_group("access"), AccessOptions)


def run(args, _rest) -> int:
    from unisim.simulator.serving import http
    from unisim.simulator.serving.sessions import SessionPool
    from unisim.simulator.serving.web import AccessOptions

    stages, options = from_flags(StageOptions, args), from_flags(ServeOptions, args)
    access = from_flags(AccessOptions, args)
    credentials = access.credentials()  # before the model loads: a refused exposure costs nothing
    simulator = simulator_of(stages, args, max_batch=options.max_batch)
    pool = SessionPool(simulator, batch_window_s=options.batch_window_s, session_timeout_s=options.session_timeout_s,
                       max_sessions=options.max_sessions, max_sessions_per_client=options.max_sessions_per_client)
    server = http.SimulatorServer(None, access.host, options.port, pool=pool, max_connections=options.max_connections,
                                  read_timeout_s=options.read_timeout_s, credentials=credentials,
                                  insecure=access.insecure).start()
    extra = []
    if options.grpc_port is not None:
        from unisim.simulator.serving.rpc import DmEnvRpcServer

        extra.append(DmEnvRpcServer(None, access.host, options.grpc_port, pool=pool,
                                    max_connections=options.max_connections, idle_timeout_s=options.read_timeout_s,
                                    credentials=credentials, insecure=access.insecure).start())
    guard = (f"{len(credentials.tokens)} token(s)" if credentials.required else "no authentication") + (
        ", TLS" if credentials.tls else "")
    print(f"unisim serve: {server.url} (frames {simulator.frames} × {simulator.output_size}, max_batch "
          f"{simulator.max_batch}; {guard})" + "".join(f"; dm_env_rpc on {rpc.address}" for rpc in extra)
          + "; Ctrl-C stops", flush=True)
    http.serve_forever(server, also=extra)
    return 0
