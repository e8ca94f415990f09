"""The client of `unisim serve` (serving/http.py): `RemoteSimulator` has the local `Simulator`'s multi-session
interface, so the environments in simulator/envs.py run against a server unchanged. The wire format both ends share
(frames as {"shape", "dtype", "data": base64 of the raw uint8 bytes}) and `ServerError` are serving/protocol.py's.

    sim = RemoteSimulator("http://127.0.0.1:8470")
    session = sim.new_session(image, seed=0)
    frames, = sim.step_sessions([session], [Action(text="push the red block left")])

Stdlib only (`http.client`, JSON). Errors carry the server's message: `RemoteActionError` (400, an `ActionError`),
`UnknownSession` (404, a `LookupError`), `ServerError` otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Sequence

import numpy as np

from unisim.schemas.controls import ControlStats
from unisim.simulator.core import Action, ActionError
from unisim.simulator.serving.protocol import ServerError, decode_array, encode_array
from unisim.simulator.serving.web import bearer

# ----------------------------------------------------------------------------------------------------- client

class RemoteActionError(ServerError, ActionError):
    """400: a bad request, observation or action (an ActionError, as a local Simulator raises)."""


class UnknownSession(ServerError, LookupError):
    """404: the session was closed or expired (or never existed)."""


@dataclasses.dataclass
class RemoteSession:
    id: str
    seed: int
    last_frames: np.ndarray  # [n, H, W, 3] uint8: the latest observation
    steps: int = 0


class RemoteSimulator:
    """A `Simulator` on a server: the same new_session / step_sessions / close_session / describe, and attributes
    frames, output_size, base_size, history_frames, controls ({source: ControlStats}), max_batch. Thread-safe:
    each thread keeps its own keep-alive connection. step_sessions sends up to max_batch sessions per request, so
    (unlike a local Simulator) a bad action in a later chunk comes after earlier chunks have stepped."""

    def __init__(self, url: str, timeout: float = 600.0, *, token: str | None = None, ca_file: str | None = None):
        """`token`: the server's bearer token (none: $UNISIM_AUTH_TOKEN if set); `ca_file`: the PEM certificate(s)
        an https:// server's certificate must chain to (none: the system's)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a server URL is http://HOST:PORT or https://HOST:PORT, not {url!r}")
        self.url, self.timeout = url.rstrip("/"), timeout
        self._host, self._port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        authorization = bearer(token)
        self._headers = {"Content-Type": "application/json", **({"Authorization": authorization} if authorization
                                                                  else {})}
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._connections_lock = threading.Lock()
        self.max_request_bytes = None
        self._info = self._request("GET", "/v1/info")
        self.frames, self.history_frames = self._info["frames_per_step"], self._info["history_frames"]
        self.output_size, self.base_size = tuple(self._info["output_size"]), tuple(self._info["base_size"])
        self.controls = {name: ControlStats.from_json(s) for name, s in self._info["control_stats"].items()}
        self.max_batch = self._info["server"]["max_batch"]
        self.max_request_bytes = self._info["server"]["max_request_bytes"]

    def describe(self) -> dict:
        return copy.deepcopy(self._info)

    def stats(self) -> dict:
        return self._request("GET", "/v1/stats")

    def new_session(self, observation: np.ndarray | None = None, seed: int | None = None) -> RemoteSession:
        body = {"observation": None if observation is None else encode_array(np.asarray(observation)),
                "seed": None if seed is None else int(seed)}
        answer = self._request("POST", "/v1/sessions", body)
        return RemoteSession(answer["session"], answer["seed"], decode_array(answer["frames"]))

    def step_sessions(self, sessions: Sequence[RemoteSession], actions: Sequence[Action]) -> list[np.ndarray]:
        if len(sessions) != len(actions):
            raise ValueError(f"{len(sessions)} sessions but {len(actions)} actions")
        steps = [{"session": s.id, **self._action_json(a)} for s, a in zip(sessions, actions)]
        out = []
        for start in range(0, len(steps), self.max_batch):
            chunk = steps[start:start + self.max_batch]
            if len(chunk) == 1:
                session_id = urllib.parse.quote(chunk[0].pop("session"), safe="")
                out.append(decode_array(self._request("POST", f"/v1/sessions/{session_id}/step", chunk[0])["frames"]))
            else:
                out += [decode_array(f) for f in self._request("POST", "/v1/step", {"steps": chunk})["frames"]]
        for session, frames in zip(sessions, out):
            session.last_frames, session.steps = frames, session.steps + 1
        return out

    def close_session(self, session: RemoteSession) -> None:
        """Frees the session on the server; closing one that already expired is not an error."""
        try:
            self._request("DELETE", f"/v1/sessions/{urllib.parse.quote(session.id, safe='')}")
        except UnknownSession:
            pass

    def close(self) -> None:
        """Closes every thread's connection."""
        with self._connections_lock:
            for connection in self._connections:
                connection.close()

    @staticmethod
    def _action_json(action: Action) -> dict:
        if not isinstance(action, Action):
            raise ActionError(f"an action is an Action(text=…, controls=…), not {type(action).__name__}")
        controls = None if action.controls is None else np.asarray(action.controls, np.float64).tolist()
        return {"text": action.text, "controls": controls, "source": action.source}

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        if data is not None and self.max_request_bytes is not None and len(data) > self.max_request_bytes:
            # the server would refuse it unread (413) and drop the connection mid-send: say so here instead
            raise ServerError(413, f"request body of {len(data)} bytes exceeds the server's max_request_bytes "
                                   f"{self.max_request_bytes}")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = (
                http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._tls)
                if self._tls else http.client.HTTPConnection(self._host, self._port, timeout=self.timeout))
            with self._connections_lock:
                self._connections.append(connection)
        for attempt in range(2):
            reused = connection.sock is not None
            try:
                connection.request(method, path, body=data, headers=self._headers)
                response = connection.getresponse()
                raw = response.read()
                break
            except ConnectionError as e:
                connection.close()
                # a keep-alive connection the server closed while idle fails at once: retry on a fresh one
                if not reused or attempt:
                    raise ConnectionError(f"{self.url}{path}: {e}") from e
            except BaseException:
                connection.close()  # a timeout or interrupt leaves a half-read response: start clean next time
                raise
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"error": raw[:500].decode("utf-8", "replace")}
        if response.status >= 400:
            error = {400: RemoteActionError, 404: UnknownSession}.get(response.status, ServerError)
            raise error(response.status, f"{method} {path}: {response.status} {payload.get('error', payload)}")
        return payload


def connect_dm_env_rpc(address: str, *, token: str | None = None, ca_file: str | None = None,
                       tls: bool | None = None, timeout: float | None = 30.0):
    """A dm_env_rpc `Connection` to `unisim serve --grpc_port` (serving/rpc.py) at "HOST:PORT": TLS when `tls`
    (none: when a `ca_file` is given) checked against `ca_file` (none: the system's roots), and the bearer `token`
    (none: $UNISIM_AUTH_TOKEN if set) on every call. Use it as dm_env_rpc's own:
    `dm_env_adaptor.create_and_join_world(connect_dm_env_rpc(address, token=…), settings, {})`."""
    import grpc
    from dm_env_rpc.v1 import connection

    authorization = bearer(token)
    metadata = [("authorization", authorization)] if authorization else None
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    if tls if tls is not None else ca_file is not None:
        roots = None
        if ca_file is not None:
            with open(ca_file, "rb") as f:
                roots = f.read()
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots), options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise ConnectionError(f"no dm_env_rpc server answered at {address} within {timeout} s") from None

    class ChannelConnection(connection.Connection):  # closes its channel with it
        def close(self):
            super().close()
            channel.close()

    return ChannelConnection(channel, metadata)
