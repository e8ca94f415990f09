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

Errors are always {"error": message}, never internals: 400 malformed JSON, wrong types or fields, a bad observation
or action (the simulator's ActionError message; a bad action fails only its own request, not the batch it shares),
a text over MAX_TEXT_CHARS, an image over MAX_OBSERVATION_PIXELS (read from its header, before decoding), a body
shorter than its Content-Length (never executed), or a vectorised batch over max_batch; 404 unknown or expired
session, or no such endpoint; 405 wrong method; 409 the session is already stepping; 411 no Content-Length; 413 body
over max_request_bytes (checked before reading); 414 a request line too long; 429 this client already holds
max_sessions_per_client sessions; 503 max_sessions or max_connections reached, or shutting down; 500 the sampler
failed on the batch (details in the server's log; it keeps serving). Sessions unused for session_timeout_s are
dropped; a connection silent for read_timeout_s is closed. A client is its address, or the `X-Unisim-Client`
token it sends (protocol.py's `client_identity`). Actions are encoded (text tokenised and embedded) on the
request's own thread, so the simulator's lock is held only to sample. No authentication: it binds 127.0.0.1 unless
told otherwise.

    curl -s localhost:8470/v1/info
    curl -s -X POST localhost:8470/v1/sessions -d "{\"observation\": {\"image\": \"$(base64 -w0 start.png)\"}}"
    curl -s -X POST localhost:8470/v1/sessions/SESSION/step -d '{"text": "push the red block left"}'
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from unisim.simulator.core import Action, ActionError, Simulator
from unisim.simulator.serving.protocol import CLIENT_TOKEN_KEY, ServerError, check_observation, client_identity, \
    decode_array, decode_image, encode_array, make_action
from unisim.simulator.serving.sessions import SessionPool

logger = logging.getLogger(__name__)

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

class SimulatorServer:
    """Serves one `Simulator` to many HTTP clients through a `SessionPool` (its own, or `pool`, shared with other
    transports so that their steps batch together). Binds on construction, so `address` and `url` are known before
    `start()`. `routes`: extra (method, path regex, handler(body, *groups) → (status, payload)) endpoints, where a
    payload that is bytes is sent as it is with the content type `(bytes, content_type)` gives (the playground)."""

    def __init__(self, simulator: Simulator | None, host: str = "127.0.0.1", port: int = 8470, *,
                 pool: SessionPool | None = None, max_request_bytes: int = 32 << 20, max_connections: int = 256,
                 read_timeout_s: float = 30.0, routes=(), **pool_limits):
        if (pool is None) == (simulator is None):
            raise ValueError("give a simulator (and its pool's limits) or a pool")
        self.pool = pool or SessionPool(simulator, **pool_limits)
        sim = self.pool.sim
        self.max_request_bytes, self.read_timeout_s = max_request_bytes, read_timeout_s
        self._info = {**sim.describe(),
                      "control_stats": {name: stats.to_json() for name, stats in sim.controls.items()},
                      "server": {**self.pool.limits(), "max_request_bytes": max_request_bytes,
                                 "max_connections": max_connections}}
        self._routes = [*routes, *self._ROUTES]
        self._threads: list[threading.Thread] = []
        self._httpd = _HTTPServer((host, port), _Handler, max_connections)
        self._httpd.app = self

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> "SimulatorServer":
        self.pool.start()
        thread = threading.Thread(target=self._httpd.serve_forever, name="unisim-http", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        if self._threads:
            self._httpd.shutdown()  # blocks until serve_forever returns: only valid once started
            self.pool.stop()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stats(self) -> dict:
        return self.pool.stats()

    # ---------------------------------------------------------------------------------------------- endpoints

    _ROUTES = [("GET", re.compile(r"/healthz"), "_healthz"), ("GET", re.compile(r"/v1/info"), "_get_info"),
               ("GET", re.compile(r"/v1/stats"), "_get_stats"), ("POST", re.compile(r"/v1/sessions"), "_create"),
               ("POST", re.compile(r"/v1/sessions/([^/]+)/step"), "_step_one"),
               ("DELETE", re.compile(r"/v1/sessions/([^/]+)"), "_close"),
               ("POST", re.compile(r"/v1/step"), "_step_many")]

    def handle(self, method: str, path: str, body, client: str = "") -> tuple[int, dict]:
        matched = [(m, handler if callable(handler) else getattr(self, handler), match.groups())
                   for m, pattern, handler in self._routes if (match := pattern.fullmatch(path))]
        if not matched:
            raise ServerError(404, f"no endpoint {path[:200]}")
        for m, endpoint, args in matched:
            if m == method:
                try:
                    return endpoint(body, *args, client=client) if endpoint == self._create else endpoint(body, *args)
                except ActionError as e:
                    raise ServerError(400, str(e)) from None
        raise ServerError(405, f"{path} takes {' or '.join(m for m, _, _ in matched)}, not {method}")

    def _healthz(self, body):
        return 200, {"ok": True}

    def _get_info(self, body):
        return 200, self._info

    def _get_stats(self, body):
        return 200, self.stats()

    def _create(self, body, client: str = ""):
        body = _fields(body, frozenset({"observation", "seed"}))
        self.pool.check_capacity(client)  # before decoding an image: an over-quota client costs nothing
        session_id, session = self.pool.create(_decode_observation(body.get("observation")), body.get("seed"),
                                               client)
        return 201, {"session": session_id, "seed": session.seed, "frames": encode_array(session.last_frames)}

    def _step_one(self, body, session_id):
        frames = self.pool.step([session_id], [_parse_action(_fields(body, ACTION_FIELDS))])
        return 200, {"frames": encode_array(frames[0])}

    def _step_many(self, body):
        steps = _fields(body, frozenset({"steps"})).get("steps")
        if not isinstance(steps, list) or not steps:
            raise ServerError(400, 'the body is {"steps": [{"session": ID, "text": …, "controls": …}, …]}, '
                                   'with at least one step')
        items = [_fields(item, ACTION_FIELDS | {"session"}, f"steps[{i}]") for i, item in enumerate(steps)]
        if not all(isinstance(item.get("session"), str) for item in items):
            raise ServerError(400, "every step names its session (a string)")
        frames = self.pool.step([item["session"] for item in items], [_parse_action(item) for item in items])
        return 200, {"frames": [encode_array(f) for f in frames]}

    def _close(self, body, session_id):
        self.pool.close(session_id)
        return 200, {"closed": session_id}


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 1024  # the listen backlog: socketserver's 5 resets connections when many clients start at once
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        """At most `max_connections` connections (one thread each) at once; one more is answered 503 and closed."""
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "too many connections; retry later"}).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: an environment thread steps over one connection

    def setup(self):
        # Every read (a request line, headers, a body, an idle keep-alive wait) gives up after the server's
        # read_timeout_s: a half-open or trickling connection holds its thread that long at most.
        self.timeout = self.server.app.read_timeout_s
        super().setup()

    def _client(self) -> str:
        """Who is asking, for per-client quotas: an `X-Unisim-Client` token, else the peer address."""
        return client_identity(self.headers.get(CLIENT_TOKEN_KEY), self.client_address[0])

    def _serve(self) -> None:
        app: SimulatorServer = self.server.app
        method = self.command
        try:
            status, payload = app.handle(method, urllib.parse.urlsplit(self.path).path, self._read_json(app),
                                         self._client())
        except ServerError as e:
            status, payload = e.status, {"error": str(e)}
        except Exception:  # a bug must cost one request, not the server; its details go to the log, not the client
            logger.exception("%s %s failed", method, self.path[:200])
            status, payload = 500, {"error": "internal error (see the server's log)"}
        app.pool.count(requests=1, errors=int(status >= 400))
        content_type = "application/json"
        if isinstance(payload, tuple):  # (bytes, content type): a page or an image
            data, content_type = payload
        else:
            data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    # PUT and PATCH too: answered 405 in JSON rather than http.server's HTML 501
    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def _read_json(self, app: SimulatorServer):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServerError(411, "send a Content-Length; chunked bodies are not accepted")
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        if not (length.isascii() and length.isdigit()):  # "²" and "١٢" are digits to str.isdigit, not to int()
            self.close_connection = True  # the body's end is unknown: the connection cannot be reused
            raise ServerError(400, f"bad Content-Length {length!r}")
        if int(length) > app.max_request_bytes:
            self.close_connection = True  # the body stays unread
            raise ServerError(413, f"request body of {length} bytes exceeds max_request_bytes {app.max_request_bytes}")
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):  # the client stopped (or timed out) before its body ended: never executed
            self.close_connection = True
            raise ServerError(400, f"the body ended after {len(raw)} of {length} bytes")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ServerError(400, f"malformed JSON: {e}") from None

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (a request line too long, a malformed request) as JSON, like every other."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        data = json.dumps({"error": message or phrase}).encode()
        self.close_connection = True
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        if isinstance(code, int) and code >= 500:  # failures only: a step per environment per second is noise
            super().log_request(code, size)

    def log_error(self, format, *args):
        if not format.startswith("Request timed out"):  # an idle keep-alive connection closing is normal
            super().log_error(format, *args)


def serve(simulator: Simulator, host: str = "127.0.0.1", port: int = 8470, **kwargs) -> SimulatorServer:
    """A started `SimulatorServer` (keyword arguments: its limits); `stop()` it when done."""
    return SimulatorServer(simulator, host, port, **kwargs).start()


def serve_forever(server: SimulatorServer, also=()) -> None:
    """Blocks until Ctrl-C or SIGTERM, then stops `server`. The handlers are installed explicitly: a process
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python then raises no
    KeyboardInterrupt. `also`: other started front ends to stop with it."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for other in also:  # other front ends on the same pool (dm_env_rpc)
            other.stop()
        server.stop()
