"""A batching HTTP server for a `Simulator` (the paper's "parallel video servers"); its client is simulator/client.py.

    server = serve(Simulator.from_checkpoints("runs/base"), port=8470)   # background threads; server.url
    sim = client.RemoteSimulator("http://127.0.0.1:8470")                # new_session / step_sessions / describe
    unisim serve --checkpoint runs/base --super_resolution runs/sr1 runs/sr2 --port 8470

Many clients step their sessions concurrently; one batcher thread takes every step waiting (up to `max_batch`,
after waiting `batch_window_s` past the first for more to arrive) and samples them in ONE `step_sessions` call, so N
environments cost about one sampler call per round instead of N. Stdlib only (`http.server`, `http.client`, JSON).

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
a text over MAX_TEXT_CHARS, an image over MAX_IMAGE_PIXELS (read from its header, before decoding), a body shorter
than its Content-Length (never executed), or a vectorised batch over max_batch; 404 unknown or expired session, or
no such endpoint; 405 wrong method; 409 the session is already stepping; 411 no Content-Length; 413 body over
max_request_bytes (checked before reading); 414 a request line too long; 429 this client already holds
max_sessions_per_client sessions; 503 max_sessions or max_connections reached, or shutting down; 500 the sampler
failed on the batch (details in the server's log; it keeps serving). Sessions unused for session_timeout_s are
dropped; a connection silent for read_timeout_s is closed. A client is its address, or the `X-Unisim-Client`
token it sends. Actions are encoded (text tokenised and embedded) on the request's own thread, so the simulator's
lock is held only to sample. No authentication: it binds 127.0.0.1 unless told otherwise.

    curl -s localhost:8470/v1/info
    curl -s -X POST localhost:8470/v1/sessions -d "{\"observation\": {\"image\": \"$(base64 -w0 start.png)\"}}"
    curl -s -X POST localhost:8470/v1/sessions/SESSION/step -d '{"text": "push the red block left"}'
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import logging
import re
import secrets
import signal
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from unisim.fileio import images
from unisim.simulator.client import ServerError, decode_array, encode_array
from unisim.simulator.core import Action, ActionError, Session, Simulator

logger = logging.getLogger(__name__)

SEED_LIMIT = 2 ** 32  # JAX keys (without x64) keep 32 bits of a seed: larger ones would silently collide
MAX_IMAGE_PIXELS = 4096 * 4096  # checked in the header before decoding; frames are resized to the model's size anyway
MAX_TEXT_CHARS = 2048  # a text action's length (what `unisim convert` accepts): longer ones are refused unread
ACTION_FIELDS = frozenset({"text", "controls", "source"})
_DECODING = threading.BoundedSemaphore(2)  # image observations decoded at once: memory is bounded by 2 × the limit


def _decode_observation(obj) -> np.ndarray | None:
    if obj is None:
        return None
    if isinstance(obj, dict) and set(obj) == {"image"}:
        import cv2

        try:
            data = base64.b64decode(obj["image"] if isinstance(obj["image"], str) else b"", validate=True)
            images.check(data, MAX_IMAGE_PIXELS)  # the header's size, before anything is decoded
            with _DECODING:
                return images.decode(data, cv2.IMREAD_COLOR_RGB, MAX_IMAGE_PIXELS)
        except (ValueError, TypeError) as e:  # binascii.Error and ImageError are ValueErrors
            raise ServerError(400, f"observation image: {e}") from None
    try:
        frames = decode_array(obj)
    except ValueError as e:
        raise ServerError(400, f"observation: {e}") from None
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ServerError(400, "an initial observation is a uint8 image [H, W, 3] or frames [n, H, W, 3] with pixels; "
                               f"got {list(frames.shape)}")
    if frames.shape[-3] * frames.shape[-2] > MAX_IMAGE_PIXELS:
        raise ServerError(400, f"observation frames of {frames.shape[-2]}×{frames.shape[-3]} are over "
                               f"{MAX_IMAGE_PIXELS:,} pixels")
    return frames


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
    text, controls, source = body.get("text"), body.get("controls"), body.get("source")
    if text is not None and not isinstance(text, str):
        raise ServerError(400, f"text must be a string, not {type(text).__name__}")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise ServerError(400, f"text of {len(text):,} characters is over {MAX_TEXT_CHARS:,}")
    if source is not None and not isinstance(source, str):
        raise ServerError(400, f"source must be a string, not {type(source).__name__}")
    if controls is not None:  # shape and range are the simulator's to check (ActionError, on the batcher thread)
        try:
            controls = np.asarray(controls)
        except ValueError:  # ragged
            controls = None
        if controls is None or controls.dtype.kind not in "iuf":  # not strings, booleans or nested objects
            raise ServerError(400, "controls must be a [D] or [frames, D] list of numbers")
        controls = controls.astype(np.float64)
    return Action(text=text, controls=controls, source=source)


# ----------------------------------------------------------------------------------------------------- server

@dataclasses.dataclass(eq=False)
class _Entry:
    session: Session
    last_used: float  # time.monotonic()
    client: str = ""  # who made it: its address, or the X-Unisim-Client token it sent (`max_sessions_per_client`)
    busy: bool = False  # a step is queued or sampling: a second one now is a 409, and the reaper leaves it


class _Request:
    """One step request (one session, or a vectorised list): stepped in one batch, answered together."""

    def __init__(self, entries: list[_Entry], actions: list[Action]):
        self.entries, self.actions = entries, actions
        self.frames: list[np.ndarray] | None = None
        self.error: tuple[int, str] | None = None
        self.done = threading.Event()


class SimulatorServer:
    """Serves one `Simulator` (which it alone may call while it runs) to many HTTP clients. Binds on construction,
    so `address` and `url` are known before `start()`."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 8470, *,
                 batch_window_s: float = 0.005, session_timeout_s: float = 600.0, max_sessions: int = 1024,
                 max_request_bytes: int = 32 << 20, reaper_interval_s: float | None = None,
                 max_sessions_per_client: int = 64, max_connections: int = 256, read_timeout_s: float = 30.0):
        self.sim, self.max_batch = simulator, simulator.max_batch
        self.batch_window_s, self.session_timeout_s = batch_window_s, session_timeout_s
        self.max_sessions, self.max_request_bytes = max_sessions, max_request_bytes
        self.max_sessions_per_client, self.read_timeout_s = max_sessions_per_client, read_timeout_s
        self.reaper_interval_s = reaper_interval_s or min(max(session_timeout_s / 4, 0.05), 30.0)
        self._info = {**simulator.describe(),
                      "control_stats": {name: stats.to_json() for name, stats in simulator.controls.items()},
                      "server": {"max_batch": self.max_batch, "batch_window_s": batch_window_s,
                                 "session_timeout_s": session_timeout_s, "max_sessions": max_sessions,
                                 "max_sessions_per_client": max_sessions_per_client,
                                 "max_request_bytes": max_request_bytes, "max_text_chars": MAX_TEXT_CHARS,
                                 "max_image_pixels": MAX_IMAGE_PIXELS, "max_connections": max_connections}}
        self._sim_lock = threading.Lock()  # the Simulator is not thread-safe: batcher, session creation, closing
        self._lock = threading.Lock()  # sessions and counters
        self._sessions: dict[str, _Entry] = {}
        self._counts: collections.Counter = collections.Counter()
        self._wake = threading.Condition()  # guards the queue and `_stopping`
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = 0  # session steps in the queue
        self._stopping = threading.Event()
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
        for target in (self._httpd.serve_forever, self._batch_loop, self._reap_loop):
            thread = threading.Thread(target=target, name=f"unisim-server-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping.set()
            self._wake.notify_all()
        if self._threads:
            self._httpd.shutdown()  # blocks until serve_forever returns: only valid once started
        self._httpd.server_close()
        for thread in self._threads:
            thread.join()
        with self._wake:  # requests the batcher never took
            for request in self._queue:
                request.error = (503, "the server is shutting down")
                request.done.set()
            self._queue.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stats(self) -> dict:
        with self._lock:
            c = self._counts
            return {"requests": c["requests"], "step_requests": c["step_requests"], "steps": c["steps"],
                    "batches": c["batches"], "mean_batch_size": c["steps"] / c["batches"] if c["batches"] else 0.0,
                    "sessions": len(self._sessions), "expired": c["expired"], "errors": c["errors"]}

    # ---------------------------------------------------------------------------------------------- endpoints

    _ROUTES = [("GET", re.compile(r"/healthz"), "_healthz"), ("GET", re.compile(r"/v1/info"), "_get_info"),
               ("GET", re.compile(r"/v1/stats"), "_get_stats"), ("POST", re.compile(r"/v1/sessions"), "_create"),
               ("POST", re.compile(r"/v1/sessions/([^/]+)/step"), "_step_one"),
               ("DELETE", re.compile(r"/v1/sessions/([^/]+)"), "_close"),
               ("POST", re.compile(r"/v1/step"), "_step_many")]

    def handle(self, method: str, path: str, body, client: str = "") -> tuple[int, dict]:
        matched = [(m, getattr(self, name), match.groups()) for m, pattern, name in self._ROUTES
                   if (match := pattern.fullmatch(path))]
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
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT):
            raise ServerError(400, f"seed must be an integer in [0, 2**32), not {seed!r}")
        self._check_capacity(client)  # before any decoding or waiting; again when adding
        observation = _decode_observation(body.get("observation"))
        with self._sim_lock:
            session = self.sim.new_session(observation, seed)
        session_id = secrets.token_urlsafe(12)  # unguessable: clients cannot step each other's sessions
        with self._lock:
            self._check_capacity(client)
            self._sessions[session_id] = _Entry(session, time.monotonic(), client)
        return 201, {"session": session_id, "seed": session.seed, "frames": encode_array(session.last_frames)}

    def _check_capacity(self, client: str) -> None:
        if sum(entry.client == client for entry in list(self._sessions.values())) >= self.max_sessions_per_client:
            # 429, not 503: this client's quota is spent, the server is not full — other clients still get sessions
            raise ServerError(429, f"this client holds max_sessions_per_client={self.max_sessions_per_client} "
                                   "sessions; close some, or wait for idle ones to expire")
        if len(self._sessions) >= self.max_sessions:
            raise ServerError(503, f"the server holds max_sessions={self.max_sessions} sessions; close some, or wait "
                               f"for idle ones to expire ({self.session_timeout_s:g} s)")

    def _checked(self, action: Action) -> Action:
        """`action` once the simulator accepts it, encoded on this request's thread — its text embedded, cached —
        so that the batcher, which holds the simulator, never waits for a tokenizer or an encoder."""
        self.sim.check_action(action)
        return action

    def _count_step_request(self) -> None:
        with self._lock:
            self._counts["step_requests"] += 1

    def _step_one(self, body, session_id):
        self._count_step_request()
        request = self._submit([session_id], [self._checked(_parse_action(_fields(body, ACTION_FIELDS)))])
        return 200, {"frames": encode_array(request.frames[0])}

    def _step_many(self, body):
        self._count_step_request()
        steps = _fields(body, frozenset({"steps"})).get("steps")
        if not isinstance(steps, list) or not steps:
            raise ServerError(400, 'the body is {"steps": [{"session": ID, "text": …, "controls": …}, …]}, '
                                   'with at least one step')
        if len(steps) > self.max_batch:
            raise ServerError(400, f"batch of {len(steps)} exceeds max_batch {self.max_batch}")
        items = [_fields(item, ACTION_FIELDS | {"session"}, f"steps[{i}]") for i, item in enumerate(steps)]
        if not all(isinstance(item.get("session"), str) for item in items):
            raise ServerError(400, "every step names its session (a string)")
        request = self._submit([item["session"] for item in items],
                               [self._checked(_parse_action(item)) for item in items])
        return 200, {"frames": [encode_array(f) for f in request.frames]}

    def _close(self, body, session_id):
        with self._lock:
            entry = self._sessions.pop(session_id, None)
        if entry is None:
            raise ServerError(404, f"unknown or expired session {session_id!r}")
        with self._sim_lock:  # a step already in flight still finishes and is answered
            self.sim.close_session(entry.session)
        return 200, {"closed": session_id}

    # ------------------------------------------------------------------------------------------------ batching

    def _submit(self, session_ids: list[str], actions: list[Action]) -> _Request:
        """Queues the steps and waits until the batcher has answered them; raises ServerError on failure."""
        if len(set(session_ids)) != len(session_ids):
            raise ServerError(400, "a session appears more than once in one step request")
        now = time.monotonic()
        with self._lock:
            entries = [self._sessions.get(s) for s in session_ids]
            for session_id, entry in zip(session_ids, entries):
                if entry is None:
                    raise ServerError(404, f"unknown or expired session {session_id!r}")
                if entry.busy:
                    raise ServerError(409, f"session {session_id!r} is already stepping; wait for that step's answer")
            for entry in entries:
                entry.busy, entry.last_used = True, now
        request = _Request(entries, actions)
        with self._wake:
            if self._stopping.is_set():
                self._release([request])
                raise ServerError(503, "the server is shutting down")
            self._queue.append(request)
            self._queued += len(entries)
            self._wake.notify_all()
        request.done.wait()  # stop() answers whatever the batcher did not take, so this always returns
        if request.error:
            raise ServerError(*request.error)
        return request

    def _batch_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping.is_set():
                    self._wake.wait()
                if self._stopping.is_set():
                    return
                # Clients that step in lockstep arrive a few ms apart: waiting a moment after the first lets one
                # sampler call serve all of them (stops early once a full batch is waiting).
                deadline = time.monotonic() + self.batch_window_s
                while self._queued < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                batch, n = [], 0
                while self._queue and n + len(self._queue[0].entries) <= self.max_batch:
                    request = self._queue.popleft()
                    n += len(request.entries)
                    batch.append(request)
                self._queued -= n
            try:
                self._run(batch)
            except Exception:  # a bug here must not kill the batcher and leave every client waiting
                logger.exception("the batcher failed")
                for request in batch:
                    request.error = request.error or (500, "internal error (see the server's log)")
            finally:
                self._release(batch)

    def _run(self, batch: list[_Request]) -> None:
        with self._sim_lock:
            valid = []
            for request in batch:  # each request's actions checked alone: a bad one fails only its own request
                try:
                    for action in request.actions:
                        self.sim.check_action(action)  # caches text embeddings, so step_sessions reuses them
                    valid.append(request)
                except ActionError as e:
                    request.error = (400, str(e))
                except Exception:
                    logger.exception("encoding an action failed")
                    request.error = (500, "encoding the action failed (see the server's log)")
            sessions = [entry.session for request in valid for entry in request.entries]
            if sessions:
                try:
                    frames = self.sim.step_sessions(sessions, [a for request in valid for a in request.actions])
                except Exception:
                    logger.exception("sampling a batch of %d sessions failed", len(sessions))
                    for request in valid:
                        request.error = (500, "sampling failed (see the server's log)")
                else:
                    for request in valid:
                        request.frames, frames = frames[:len(request.entries)], frames[len(request.entries):]
                    with self._lock:
                        self._counts["batches"] += 1
                        self._counts["steps"] += len(sessions)

    def _release(self, batch: list[_Request]) -> None:
        now = time.monotonic()
        with self._lock:
            for request in batch:
                for entry in request.entries:
                    entry.busy, entry.last_used = False, now
        for request in batch:
            request.done.set()

    def _reap_loop(self) -> None:
        while not self._stopping.wait(self.reaper_interval_s):
            self.reap()

    def reap(self) -> int:
        """Drops sessions idle for session_timeout_s; returns how many."""
        cutoff = time.monotonic() - self.session_timeout_s
        with self._lock:
            expired = [s for s, entry in self._sessions.items() if not entry.busy and entry.last_used < cutoff]
            entries = [self._sessions.pop(s) for s in expired]
            self._counts["expired"] += len(expired)
        if entries:
            with self._sim_lock:
                for entry in entries:
                    self.sim.close_session(entry.session)
        return len(entries)


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
        token = self.headers.get("X-Unisim-Client", "")[:64]
        return f"token:{token}" if token else f"addr:{self.client_address[0]}"

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
        with app._lock:
            app._counts["requests"] += 1
            app._counts["errors"] += status >= 400
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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


def serve_forever(server: SimulatorServer) -> None:
    """Blocks until Ctrl-C or SIGTERM, then stops `server`. The handlers are installed explicitly: a process
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python then raises no
    KeyboardInterrupt."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
