"""`SessionPool`: the one server core — sessions, per-client quotas, the batcher and the reaper — behind every
transport (HTTP/JSON in serving/http.py, dm_env_rpc over gRPC in serving/rpc.py, the playground page).

Many clients step their sessions concurrently; one batcher thread takes every step waiting (up to `max_batch`,
after waiting `batch_window_s` past the first for more to arrive) and samples them in ONE `step_sessions` call, so
N environments cost about one sampler call per round instead of N, whichever protocol each arrived by. Actions are
checked and encoded (text tokenised and embedded) on the caller's thread, so the simulator's lock is held only to
sample. Every transport meets the same limits: those of a request (texts, observations, seeds) are
serving/protocol.py's, checked here too; the pool's own are max_sessions in all and max_sessions_per_client for
one client.

Errors are protocol.py's `ServerError(status, message)` with an HTTP status as the kind (400 bad input, 404 unknown
session, 409 already stepping, 429 this client's quota, 503 full or shutting down, 500 sampling failed); the gRPC
front end maps them onto gRPC codes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import threading
import time

import numpy as np

from unisim.simulator.core import Action, ActionError, Session, Simulator
from unisim.simulator.serving.protocol import MAX_OBSERVATION_PIXELS, MAX_TEXT_CHARS, ServerError, \
    check_observation, check_seed

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- pool

@dataclasses.dataclass(eq=False)
class _Entry:
    session: Session
    last_used: float  # time.monotonic()
    client: str = ""  # who made it: an address or a token the client chose (`max_sessions_per_client`)
    busy: bool = False  # a step is queued or sampling: a second one now is a 409, and the reaper leaves it


class _Request:
    """One step request (one session, or a vectorised list): stepped in one batch, answered together."""

    def __init__(self, entries: list[_Entry], actions: list[Action]):
        self.entries, self.actions = entries, actions
        self.frames: list[np.ndarray] | None = None
        self.error: tuple[int, str] | None = None
        self.done = threading.Event()


class SessionPool:
    """The sessions of one `Simulator` (which it alone may call while it runs), stepped in batches."""

    def __init__(self, simulator: Simulator, *, batch_window_s: float = 0.005, session_timeout_s: float = 600.0,
                 max_sessions: int = 1024, max_sessions_per_client: int = 64,
                 reaper_interval_s: float | None = None):
        self.sim, self.max_batch = simulator, simulator.max_batch
        self.batch_window_s, self.session_timeout_s = batch_window_s, session_timeout_s
        self.max_sessions, self.max_sessions_per_client = max_sessions, max_sessions_per_client
        self.reaper_interval_s = reaper_interval_s or min(max(session_timeout_s / 4, 0.05), 30.0)
        self._sim_lock = threading.Lock()  # the Simulator is not thread-safe: batcher, session creation, closing
        self._lock = threading.Lock()  # sessions and counters
        self._sessions: dict[str, _Entry] = {}
        self.counts: collections.Counter = collections.Counter()  # guarded by `_lock`; transports add theirs
        self._wake = threading.Condition()  # guards the queue and `_stopping`
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = 0  # session steps in the queue
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._users = 0  # transports that started it: the last to stop stops it

    def limits(self) -> dict:
        return {"max_batch": self.max_batch, "batch_window_s": self.batch_window_s,
                "session_timeout_s": self.session_timeout_s, "max_sessions": self.max_sessions,
                "max_sessions_per_client": self.max_sessions_per_client, "max_text_chars": MAX_TEXT_CHARS,
                "max_image_pixels": MAX_OBSERVATION_PIXELS}  # its name in /v1/info, unchanged for clients

    def start(self) -> "SessionPool":
        with self._lock:
            self._users += 1
            if self._threads:
                return self
            for target in (self._batch_loop, self._reap_loop):
                thread = threading.Thread(target=target, name=f"unisim-pool-{target.__name__}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
        with self._wake:
            self._stopping.set()
            self._wake.notify_all()
        for thread in self._threads:
            thread.join()
        with self._wake:  # requests the batcher never took
            for request in self._queue:
                request.error = (503, "the server is shutting down")
                request.done.set()
            self._queue.clear()

    def count(self, **increments: int) -> None:
        with self._lock:
            self.counts.update(increments)

    def stats(self) -> dict:
        with self._lock:
            c = self.counts
            return {"requests": c["requests"], "step_requests": c["step_requests"], "steps": c["steps"],
                    "batches": c["batches"], "mean_batch_size": c["steps"] / c["batches"] if c["batches"] else 0.0,
                    "sessions": len(self._sessions), "expired": c["expired"], "errors": c["errors"]}

    # ------------------------------------------------------------------------------------------- sessions

    def create(self, observation: np.ndarray | None, seed: int | None, client: str = "") -> tuple[str, Session]:
        """A new session (from `observation`, checked, or text-only from None) and its unguessable id."""
        seed = check_seed(seed)
        self.check_capacity(client)  # before any waiting; again when adding
        if observation is not None:
            check_observation(observation)
        with self._sim_lock:
            session = self.sim.new_session(observation, seed)
        session_id = secrets.token_urlsafe(12)  # unguessable: clients cannot step each other's sessions
        refused = None
        with self._lock:
            try:
                self.check_capacity(client)
                self._sessions[session_id] = _Entry(session, time.monotonic(), client)
            except ServerError as e:
                refused = e
        if refused:  # others filled the server meanwhile (closed outside `_lock`: the batcher takes the locks the
            with self._sim_lock:  # other way round)
                self.sim.close_session(session)
            raise refused
        return session_id, session

    def session(self, session_id: str) -> Session:
        with self._lock:
            entry = self._sessions.get(session_id)
        if entry is None:
            raise ServerError(404, f"unknown or expired session {session_id!r}")
        return entry.session

    def check_capacity(self, client: str) -> None:
        """Raises 429 or 503 when `client` may not make a session now (transports ask before decoding anything)."""
        if sum(entry.client == client for entry in list(self._sessions.values())) >= self.max_sessions_per_client:
            # 429, not 503: this client's quota is spent, the server is not full — other clients still get sessions
            raise ServerError(429, f"this client holds max_sessions_per_client={self.max_sessions_per_client} "
                                   "sessions; close some, or wait for idle ones to expire")
        if len(self._sessions) >= self.max_sessions:
            raise ServerError(503, f"the server holds max_sessions={self.max_sessions} sessions; close some, or wait "
                               f"for idle ones to expire ({self.session_timeout_s:g} s)")

    def close(self, session_id: str) -> None:
        with self._lock:
            entry = self._sessions.pop(session_id, None)
        if entry is None:
            raise ServerError(404, f"unknown or expired session {session_id!r}")
        with self._sim_lock:  # a step already in flight still finishes and is answered
            self.sim.close_session(entry.session)

    def step(self, session_ids: list[str], actions: list[Action]) -> list[np.ndarray]:
        """Each session's next frames: the actions are checked and encoded here (on the caller's thread), then the
        steps wait for the batcher, which samples them with whatever else is waiting. Raises ServerError."""
        if len(session_ids) > self.max_batch:
            raise ServerError(400, f"batch of {len(session_ids)} exceeds max_batch {self.max_batch}")
        self.count(step_requests=1)
        try:
            for action in actions:
                self.sim.check_action(action)  # embeds text into the thread-safe cache that step_sessions reuses
        except ActionError as e:
            raise ServerError(400, str(e)) from None
        return self._submit(session_ids, actions).frames

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
                        self.sim.check_action(action)  # cached: cheap after the caller's thread encoded it
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
                    self.count(batches=1, steps=len(sessions))

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
            self.counts["expired"] += len(expired)
        if entries:
            with self._sim_lock:
                for entry in entries:
                    self.sim.close_session(entry.session)
        return len(entries)
