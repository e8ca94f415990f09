"""A batching HTTP server for a `Simulator` (the paper's "parallel video servers"); its client is serving/client.py.

    server = serve(Simulator.from_checkpoints("runs/base"), port=8470)   # background threads; server.url
    sim = client.RemoteSimulator("http://127.0.0.1:8470")                # new_session / step_sessions / describe
    unisim serve --checkpoint runs/base --super_resolution runs/sr1 runs/sr2 --port 8470

Many clients step their sessions concurrently; the sessions, quotas and the batcher that samples every waiting step
in ONE `step_sessions` call are serving/sessions.py's `SessionPool`, which this HTTP front end shares with the
dm_env_rpc one (serving/rpc.py) when both serve: one server, two protocols, the same limits (serving/protocol.py).
Stdlib only (`http.server`, `http.client`, JSON).

  method  path                     body → answer (JSON)
  GET     /healthz                 → {"ok": true}
  GET     /v1/info                 → Simulator.describe() + "control_stats" {source: ControlStats.to_json()}
                                     + "server" {max_batch, batch_window_s, session_timeout_s, max_sessions, …}
  GET     /v1/stats                → {requests, step_requests, steps, batches, mean_batch_size, sessions, expired,
                                     errors}: steps / batches is the batching achieved
  POST    /v1/sessions             {"observation": OBS | null, "seed": int | null} → 201 {"session", "seed", "frames"}
  POST    /v1/sessions/{id}/step   {"text", "controls", "source"} → {"frames"}
  POST    /v1/step                 {"steps": [{"session", "text", "controls", "source"}, …]}
                                     → {"frames": [ARRAY, …]}  (at most max_batch steps; one batch)
  DELETE  /v1/sessions/{id}        → {"closed": id}

ARRAY is {"shape": [n, H, W, 3], "dtype": "uint8", "data": base64 of the raw row-major bytes}. OBS is an ARRAY
(an image [H, W, 3] or frames [n, H, W, 3]) or {"image": base64 of a PNG/JPEG file}; null starts text-only from
white frames. "controls" is a [D] or [frames, D] list of numbers; text and/or controls are required.

Errors are always {"error": message}, never internals: 401 no or a wrong bearer token (when the server has tokens);
400 malformed JSON, wrong types or fields, a bad observation or action (the simulator's ActionError message; a bad
action fails only its own request, not the batch it shares), a text over MAX_TEXT_CHARS, an image over
MAX_OBSERVATION_PIXELS (read from its header, before decoding), a body shorter than its Content-Length (never
executed), or a vectorised batch over max_batch; 404 unknown or expired session, or no such endpoint; 405 wrong
method; 409 the session is already stepping; 411 no Content-Length; 413 body over max_request_bytes (checked before
reading); 414 a request line too long; 429 this client already holds max_sessions_per_client sessions; 503
max_sessions or max_connections reached, or shutting down; 500 the sampler failed on the batch (details in the
server's log; it keeps serving). Sessions unused for session_timeout_s are dropped; a connection silent for
read_timeout_s is closed. Actions are encoded (text tokenised and embedded) on the request's own thread, so the
simulator's lock is held only to sample. The HTTP itself (connection limits, timeouts, bearer tokens and 401, HTTPS,
who a client is for its quotas, the refusal to bind beyond loopback without a token) is serving/web.py's
`WebServer`, which this server extends.

    curl -s localhost:8470/v1/info
    curl -s -X POST localhost:8470/v1/sessions -d "{\"observation\": {\"image\": \"$(base64 -w0 start.png)\"}}"
    curl -s -X POST localhost:8470/v1/sessions/SESSION/step -d '{"text": "push the red block left"}'
"""

from __future__ import annotations

import re

from unisim.simulator.core import Action, ActionError, Simulator
from unisim.simulator.serving.protocol import ServerError, check_observation, decode_array, decode_image, \
    encode_array, make_action
from unisim.simulator.serving.sessions import SessionPool
from unisim.simulator.serving.web import Credentials, Request, WebServer, serve_forever

ACTION_FIELDS = frozenset({"text", "controls", "source"})
__all__ = ["SimulatorServer", "serve", "serve_forever"]


def _decode_observation(obj):
    if obj is None:
        return None
    if isinstance(obj, dict) and set(obj) == {"image"}:
        return decode_image(obj["image"] if isinstance(obj["image"], str) else b"")
    try:
        return check_observation(decode_array(obj))
    except ValueError as e:
        raise ServerError(400, f"observation: {e}") from None


def _fields(body, allowed: frozenset, what: str = "the body") -> dict:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ServerError(400, f"{what} must be a JSON object, not {type(body).__name__}")
    if unknown := sorted(set(body) - allowed):
        raise ServerError(400, f"unknown field(s) in {what}: {', '.join(unknown)} (allowed: "
                               f"{', '.join(sorted(allowed))})")
    return body


def _parse_action(body: dict) -> Action:
    return make_action(body.get("text"), body.get("controls"), body.get("source"))


# ----------------------------------------------------------------------------------------------------- server

class SimulatorServer(WebServer):
    """Serves one `Simulator` to many HTTP clients through a `SessionPool` (its own, or `pool`, shared with other
    transports so that their steps batch together). Binds on construction, so `address` and `url` are known before
    `start()`. `routes`: extra web.py routes (the playground's); `credentials`, `insecure` and the connection limits
    are web.py's `WebServer`'s."""

    def __init__(self, simulator: Simulator | None, host: str = "127.0.0.1", port: int = 8470, *,
                 pool: SessionPool | None = None, max_request_bytes: int = 32 << 20, max_connections: int = 256,
                 read_timeout_s: float = 30.0, routes=(), credentials: Credentials | None = None,
                 insecure: bool = False, **pool_limits):
        if (pool is None) == (simulator is None):
            raise ValueError("give a simulator (and its pool's limits) or a pool")
        self.pool = pool or SessionPool(simulator, **pool_limits)
        sim = self.pool.sim
        self._info = {**sim.describe(),
                      "control_stats": {name: stats.to_json() for name, stats in sim.controls.items()},
                      "server": {**self.pool.limits(), "max_request_bytes": max_request_bytes,
                                 "max_connections": max_connections}}
        endpoints = [("GET", r"/healthz", self._healthz), ("GET", r"/v1/info", self._get_info),
                     ("GET", r"/v1/stats", self._get_stats), ("POST", r"/v1/sessions", self._create),
                     ("POST", r"/v1/sessions/([^/]+)/step", self._step_one),
                     ("DELETE", r"/v1/sessions/([^/]+)", self._close), ("POST", r"/v1/step", self._step_many)]
        super().__init__([*routes, *((m, re.compile(p), self._simulator_errors(h)) for m, p, h in endpoints)],
                         host, port, max_request_bytes=max_request_bytes, max_connections=max_connections,
                         read_timeout_s=read_timeout_s, credentials=credentials, insecure=insecure)

    def start(self) -> "SimulatorServer":
        self.pool.start()
        return super().start()

    def stop(self) -> None:
        started = bool(self._threads)
        super().stop()
        if started:
            self.pool.stop()

    def stats(self) -> dict:
        return self.pool.stats()

    def counted(self, status: int) -> None:
        self.pool.count(requests=1, errors=int(status >= 400))

    # ---------------------------------------------------------------------------------------------- endpoints

    @staticmethod
    def _simulator_errors(endpoint):
        def handler(request: Request, *groups):
            try:
                return endpoint(request, *groups)
            except ActionError as e:
                raise ServerError(400, str(e)) from None
        return handler

    def _healthz(self, request):
        return 200, {"ok": True}

    def _get_info(self, request):
        return 200, self._info

    def _get_stats(self, request):
        return 200, self.stats()

    def _create(self, request):
        body = _fields(request.body, frozenset({"observation", "seed"}))
        self.pool.check_capacity(request.client)  # before decoding an image: an over-quota client costs nothing
        session_id, session = self.pool.create(_decode_observation(body.get("observation")), body.get("seed"),
                                               request.client)
        return 201, {"session": session_id, "seed": session.seed, "frames": encode_array(session.last_frames)}

    def _step_one(self, request, session_id):
        frames = self.pool.step([session_id], [_parse_action(_fields(request.body, ACTION_FIELDS))])
        return 200, {"frames": encode_array(frames[0])}

    def _step_many(self, request):
        steps = _fields(request.body, frozenset({"steps"})).get("steps")
        if not isinstance(steps, list) or not steps:
            raise ServerError(400, 'the body is {"steps": [{"session": ID, "text": …, "controls": …}, …]}, '
                                   'with at least one step')
        items = [_fields(item, ACTION_FIELDS | {"session"}, f"steps[{i}]") for i, item in enumerate(steps)]
        if not all(isinstance(item.get("session"), str) for item in items):
            raise ServerError(400, "every step names its session (a string)")
        frames = self.pool.step([item["session"] for item in items], [_parse_action(item) for item in items])
        return 200, {"frames": [encode_array(f) for f in frames]}

    def _close(self, request, session_id):
        self.pool.close(session_id)
        return 200, {"closed": session_id}


def serve(simulator: Simulator, host: str = "127.0.0.1", port: int = 8470, **kwargs) -> SimulatorServer:
    """A started `SimulatorServer` (keyword arguments: its limits); `stop()` it when done."""
    return SimulatorServer(simulator, host, port, **kwargs).start()
