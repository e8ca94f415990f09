"""The simulator over dm_env_rpc (gRPC): what RL code that reaches remote environments speaks.

    server = serve_dm_env_rpc(Simulator.from_checkpoints("runs/base"), port=8471)   # or: unisim serve --grpc_port
    from dm_env_rpc.v1 import dm_env_adaptor
    with client.connect_dm_env_rpc("127.0.0.1:8471", token=None, ca_file=None) as conn:   # serving/client.py
        env, world = dm_env_adaptor.create_and_join_world(conn, {"observation": image, "seed": 0}, {})
        timestep = env.reset()                                          # FIRST: the initial frames
        timestep = env.step({"text": "push the red block left"})       # MID: the next segment
        env.close(); conn.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))

A world is one simulator session, named by an unguessable id; every connection's steps go to the `SessionPool`
(serving/sessions.py) that the HTTP server uses too, so concurrent environments on any number of connections are
sampled together in one sampler call, with the same limits and per-client quotas (a client is its bearer token's
name when the server has tokens, else the `x-unisim-client` metadata it sends, else its address).

With `credentials` (serving/web.py's `Credentials`), an interceptor refuses every call without `authorization:
Bearer TOKEN` metadata naming a known token (UNAUTHENTICATED, no detail), and a certificate makes the port TLS. A
stream that sends nothing for `idle_timeout_s` is cancelled, and the worlds it made are destroyed: idle streams
cannot hold every connection slot.

  create settings    "observation": uint8 [H, W, 3] or [n, H, W, 3] (none: a text-only start), "seed": int
  reset settings     the same, for the world's next episode (none: its creation settings; a world created with
                     seed s has episodes seeded s, s + 1, …; a reset before the episode's first action keeps it)
  actions            "text": string [] (≤ 2,048 characters), "controls": float64 [D] (raw units, bounded by the training
                     statistics and refused outside them; only on a model with controls), "source": string [] (only
                     where several sources have controls: then no bounds are declared); each step needs text,
                     controls or both, except the first after joining or resetting, whose actions are ignored
  observations       "frames": uint8 [-1, H, W, 3] (the initial frames, then each step's segment), "steps": int64 []

Every step answers RUNNING: a simulated world does not end by itself, so the RL loop truncates its episodes (or
resets). Errors come back as the protocol's per-request `google.rpc.Status` (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL) and leave the stream usable.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import threading
import time

import grpc
import numpy as np
from dm_env_rpc.v1 import dm_env_rpc_pb2, dm_env_rpc_pb2_grpc, tensor_spec_utils, tensor_utils
from google.rpc import code_pb2, status_pb2

from unisim.simulator.core import Simulator
from unisim.simulator.serving.protocol import CLIENT_TOKEN_KEY, MAX_TEXT_CHARS, SEED_LIMIT, ServerError, check_seed, \
    client_identity, make_action
from unisim.simulator.serving.sessions import SessionPool
from unisim.simulator.serving.web import Credentials, check_exposure

logger = logging.getLogger(__name__)

_CODES = {400: code_pb2.INVALID_ARGUMENT, 404: code_pb2.NOT_FOUND, 409: code_pb2.FAILED_PRECONDITION,
          429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE, 500: code_pb2.INTERNAL}
CREATE_SETTINGS = frozenset({"observation", "seed"})


def _spec(name: str, dtype, shape=()) -> dm_env_rpc_pb2.TensorSpec:
    return dm_env_rpc_pb2.TensorSpec(name=name, shape=list(shape), dtype=tensor_utils.np_type_to_data_type(dtype))


def specs_of(simulator: Simulator) -> dm_env_rpc_pb2.ActionObservationSpecs:
    """The world's actions and observations, numbered from 1."""
    actions = [_spec("text", np.str_)]
    if simulator.controls:
        actions.append(_spec("controls", np.float64, (simulator.control_dims,)))
    if len(simulator.controls) > 1:
        actions.append(_spec("source", np.str_))
    if len(simulator.controls) == 1:  # bounded by the training statistics (a spec has one set of bounds)
        stats, = simulator.controls.values()
        actions[1].min.doubles.array[:], actions[1].max.doubles.array[:] = list(stats.low), list(stats.high)
    h, w = simulator.output_size
    observations = [_spec("frames", np.uint8, (-1, h, w, 3)), _spec("steps", np.int64)]
    return dm_env_rpc_pb2.ActionObservationSpecs(actions=dict(enumerate(actions, 1)),
                                                 observations=dict(enumerate(observations, 1)))


@dataclasses.dataclass
class _World:
    session_id: str
    client: str
    observation: np.ndarray | None  # the creation settings, for resets
    seed: int | None
    joined: bool = False
    first: bool = True  # the next step is the first of an episode: its actions are ignored
    episode: int = 0  # episodes started from the creation settings after the first


class DmEnvRpcServer(dm_env_rpc_pb2_grpc.EnvironmentServicer):
    """dm_env_rpc's `Environment` service over a `SessionPool` (its own, or one shared with the HTTP server).
    Binds on construction (`port`: 0 picks one), so `address` is known before `start()`."""

    def __init__(self, simulator: Simulator | None, host: str = "127.0.0.1", port: int = 8471, *,
                 pool: SessionPool | None = None, max_request_bytes: int = 32 << 20, max_connections: int = 256,
                 idle_timeout_s: float = 30.0, credentials: Credentials | None = None, insecure: bool = False,
                 **pool_limits):
        if (pool is None) == (simulator is None):
            raise ValueError("give a simulator (and its pool's limits) or a pool")
        self.credentials = credentials or Credentials()
        check_exposure(host, self.credentials, insecure, "the dm_env_rpc server")
        self.pool = pool or SessionPool(simulator, **pool_limits)
        self.sim, self.max_request_bytes, self.idle_timeout_s = self.pool.sim, max_request_bytes, idle_timeout_s
        self.specs = specs_of(self.sim)
        self._worlds: dict[str, _World] = {}
        self._lock = threading.Lock()
        self._streams: dict[int, list] = {}  # open streams: id → [context, waiting on the client since (or None)]
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._close_idle_streams, name="unisim-rpc-idle", daemon=True)
        # One thread per open stream (a connection): at most max_connections, more are refused RESOURCE_EXHAUSTED.
        self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_connections + 4,
                                                                       thread_name_prefix="unisim-rpc"),
                                 interceptors=[_Authenticator(self.credentials)] if self.credentials.required else [],
                                 maximum_concurrent_rpcs=max_connections,
                                 options=[("grpc.max_receive_message_length", max_request_bytes),
                                          ("grpc.max_send_message_length", -1)])
        dm_env_rpc_pb2_grpc.add_EnvironmentServicer_to_server(self, self._grpc)
        if self.credentials.tls:
            with open(self.credentials.keyfile, "rb") as key, open(self.credentials.certfile, "rb") as cert:
                tls = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.port = self._grpc.add_secure_port(f"{host}:{port}", tls)
        else:
            self.port = self._grpc.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"cannot listen on {host}:{port}")
        self.host = host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "DmEnvRpcServer":
        self.pool.start()
        self._grpc.start()
        self._watcher.start()
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        self._stopping.set()
        self._grpc.stop(grace_s).wait()
        self.pool.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------------------------------------ stream

    def Process(self, request_iterator, context):
        client = self._client_of(context)
        state = {"world": None, "created": set()}  # the joined world's name; worlds this connection made
        stream = [context, time.monotonic()]
        with self._lock:
            self._streams[id(stream)] = stream
        try:
            for request in self._watched(request_iterator, stream):
                kind = request.WhichOneof("payload")
                handler = self._HANDLERS.get(kind)
                if handler is None:  # extensions, or a request this version of the protocol does not know
                    yield _error(code_pb2.UNIMPLEMENTED, f"{kind or 'empty'} requests are not supported")
                    continue
                try:
                    yield dm_env_rpc_pb2.EnvironmentResponse(**{kind: handler(self, getattr(request, kind), state,
                                                                               client)})
                except ServerError as e:
                    yield _error(_CODES.get(e.status, code_pb2.UNKNOWN), str(e))
                except (ValueError, KeyError, TypeError) as e:  # the protocol's own unpacking of a bad tensor
                    yield _error(code_pb2.INVALID_ARGUMENT, f"{kind}: {e}")
                except Exception:  # a bug costs one request, not the server; details go to the log
                    logger.exception("dm_env_rpc %s failed", kind)
                    yield _error(code_pb2.INTERNAL, "internal error (see the server's log)")
        finally:  # a connection that ends without leaving or destroying: it leaves, and the worlds it made go
            with self._lock:
                self._streams.pop(id(stream), None)
            self._leave_world(None, state, client)
            for name in state["created"]:
                self._destroy(name)

    @staticmethod
    def _watched(request_iterator, stream: list):
        """The stream's requests, with the time it has been waiting on the client kept in `stream[1]` (None while a
        request is being answered: a long sampler call is not the client's silence)."""
        while True:
            stream[1] = time.monotonic()
            try:
                request = next(request_iterator)
            except StopIteration:
                return
            except grpc.RpcError:  # cancelled (by the idle watcher, or the client went away)
                return
            stream[1] = None
            yield request

    def _close_idle_streams(self) -> None:
        """Cancels every stream that has sent nothing for idle_timeout_s: its thread and connection slot are freed,
        and Process's cleanup destroys the worlds it made (as HTTP's read_timeout_s closes a silent connection)."""
        while not self._stopping.wait(min(1.0, self.idle_timeout_s / 4)):
            now = time.monotonic()
            with self._lock:
                idle = [context for context, since in self._streams.values()
                        if since is not None and now - since > self.idle_timeout_s]
            for context in idle:
                logger.info("closing a dm_env_rpc stream idle for over %.0f s", self.idle_timeout_s)
                context.cancel()

    def _client_of(self, context) -> str:
        """Who is asking, for per-client quotas: the authenticated client (the interceptor let only those in), else
        an `x-unisim-client` metadata name, else the peer's address."""
        metadata = dict(context.invocation_metadata())
        if self.credentials.required:
            return f"auth:{self.credentials.client_of_header(metadata.get('authorization'))}"
        peer = context.peer()  # "ipv4:127.0.0.1:51234", "ipv6:[::1]:51234"
        return client_identity(metadata.get(CLIENT_TOKEN_KEY), peer.split(":", 1)[-1].rsplit(":", 1)[0])

    def _create_world(self, request, state, client):
        self.pool.check_capacity(client)  # before unpacking an observation
        observation, seed = self._settings(request.settings, "create_world")
        name, _ = self.pool.create(observation, seed, client)  # a world is named by its first session's id
        with self._lock:
            self._worlds[name] = _World(name, client, observation, seed)
        state["created"].add(name)
        return dm_env_rpc_pb2.CreateWorldResponse(world_name=name)

    def _join_world(self, request, state, client):
        if state["world"] is not None:
            raise ServerError(409, "already joined to a world; leave it first")
        if request.settings:
            raise ServerError(400, f"joining takes no settings, not {sorted(request.settings)}")
        world = self._world(request.world_name)
        with self._lock:
            if world.joined:
                raise ServerError(409, "another connection has joined this world")
            world.joined, world.first = True, True
        state["world"] = request.world_name
        return dm_env_rpc_pb2.JoinWorldResponse(specs=self.specs)

    def _leave_world(self, request, state, client):
        if state["world"] is not None:
            with self._lock:
                if world := self._worlds.get(state["world"]):
                    world.joined = False
            state["world"] = None
        return dm_env_rpc_pb2.LeaveWorldResponse()

    def _destroy_world(self, request, state, client):
        world = self._world(request.world_name)
        if world.joined:
            raise ServerError(409, "a connection is joined to this world; leave it first")
        if world.client != client:
            raise ServerError(404, f"unknown world {request.world_name!r}")
        self._destroy(request.world_name)
        state["created"].discard(request.world_name)
        return dm_env_rpc_pb2.DestroyWorldResponse()

    def _reset(self, request, state, client):
        if state["world"] is None:
            raise ServerError(409, "join a world before resetting it")
        self._restart(state["world"], request.settings)
        return dm_env_rpc_pb2.ResetResponse(specs=self.specs)

    def _reset_world(self, request, state, client):
        self._restart(request.world_name, request.settings)
        return dm_env_rpc_pb2.ResetWorldResponse()

    def _step(self, request, state, client):
        if state["world"] is None:
            raise ServerError(409, "join a world before stepping it")
        world = self._world(state["world"])
        wanted = list(request.requested_observations)
        if unknown := sorted(set(wanted) - set(self.specs.observations)):
            raise ServerError(400, f"no observation with uid {unknown} (there are {sorted(self.specs.observations)})")
        session = self.pool.session(world.session_id)
        if world.first:  # the episode's first step: the initial frames; its actions are ignored (the protocol's rule)
            world.first, frames = False, session.last_frames
        else:
            values = {}
            for uid, tensor in request.actions.items():
                if uid not in self.specs.actions:
                    raise ServerError(400, f"no action with uid {uid} (there are {sorted(self.specs.actions)})")
                spec = self.specs.actions[uid]
                _check_size(tensor, self.max_request_bytes, spec.name)
                values[spec.name] = _unpack(tensor, spec)
            text = values.get("text")
            action = make_action(str(text) if text is not None else None, values.get("controls"),
                                 None if values.get("source") is None else str(values["source"]))
            frames, = self.pool.step([world.session_id], [action])
        observations = {1: frames, 2: np.int64(session.steps)}
        return dm_env_rpc_pb2.StepResponse(
            state=dm_env_rpc_pb2.EnvironmentStateType.RUNNING,
            observations={uid: tensor_utils.pack_tensor(observations[uid]) for uid in dict.fromkeys(wanted)})

    _HANDLERS = {"create_world": _create_world, "join_world": _join_world, "leave_world": _leave_world,
                 "destroy_world": _destroy_world, "reset": _reset, "reset_world": _reset_world, "step": _step}

    # ----------------------------------------------------------------------------------------------- worlds

    def _settings(self, settings, what: str) -> tuple[np.ndarray | None, int | None]:
        if unknown := sorted(set(settings) - CREATE_SETTINGS):
            raise ServerError(400, f"unknown {what} setting(s) {unknown} (allowed: {sorted(CREATE_SETTINGS)})")
        observation = seed = None
        if "observation" in settings:
            _check_size(settings["observation"], self.max_request_bytes, "observation")
            observation = tensor_utils.unpack_tensor(settings["observation"])
            if not isinstance(observation, np.ndarray):
                raise ServerError(400, "observation is a uint8 image [H, W, 3] or frames [n, H, W, 3]")
        if "seed" in settings:
            seed = check_seed(tensor_utils.unpack_tensor(settings["seed"]))  # an array is refused too
        return observation, seed

    def _world(self, name: str) -> _World:
        with self._lock:
            world = self._worlds.get(name)
        if world is None:
            raise ServerError(404, f"unknown world {name!r}")
        return world

    def _restart(self, name: str, settings) -> None:
        """The world's next episode: a new session from the given or the creation settings."""
        world = self._world(name)
        try:
            untouched = self.pool.session(world.session_id).steps == 0
        except ServerError:  # the pool dropped it after session_timeout_s idle: start afresh
            untouched = False
        if not settings and untouched:
            world.first = True  # nothing happened since the last start: dm_env's reset() before the first step
            return
        if settings:
            observation, seed = self._settings(settings, "reset")
        else:  # the creation settings; a seeded world's episodes take seed, seed + 1, … (reproducible, each new)
            world.episode += 1
            observation = world.observation
            seed = None if world.seed is None else (world.seed + world.episode) % SEED_LIMIT
        session_id, _ = self.pool.create(observation, seed, world.client)
        old, world.session_id, world.first = world.session_id, session_id, True
        try:
            self.pool.close(old)
        except ServerError:  # the reaper dropped it while idle
            pass

    def _destroy(self, name: str) -> None:
        with self._lock:
            world = self._worlds.pop(name, None)
        if world is not None:
            try:
                self.pool.close(world.session_id)
            except ServerError:
                pass


def _unpack(tensor: dm_env_rpc_pb2.Tensor, spec: dm_env_rpc_pb2.TensorSpec):
    """A tensor as its spec says, by the protocol's rules: the dtype exactly; one -1 dimension inferred from the
    payload; a one-element payload broadcast to the shape; values within the spec's bounds."""
    dtype = tensor_utils.get_tensor_type(tensor)
    wanted = tensor_utils.data_type_to_np_type(spec.dtype)
    if dtype != wanted:
        raise ServerError(400, f"{spec.name} is {np.dtype(wanted).name}, not {np.dtype(dtype).name}")
    flat, shape = np.asarray(tensor_utils.unpack_proto(tensor)), list(tensor.shape)
    if shape.count(-1) > 1:
        raise ServerError(400, f"{spec.name}: at most one variable dimension, not shape {shape}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or flat.size % known:
            raise ServerError(400, f"{spec.name}: {flat.size} values do not fill shape {shape}")
        shape[shape.index(-1)] = flat.size // known
    if len(shape) != len(spec.shape) or any(s != d and d >= 0 for s, d in zip(shape, spec.shape)):
        raise ServerError(400, f"{spec.name} has shape {list(spec.shape)}, not {shape}")
    try:
        value = tensor_utils.reshape_array(flat, shape)  # broadcasts a one-element payload
    except ValueError as e:
        raise ServerError(400, f"{spec.name}: {e}") from None
    if spec.HasField("min") or spec.HasField("max"):
        bounds = tensor_spec_utils.bounds(spec)
        if np.any(value < bounds.min) or np.any(value > bounds.max):
            raise ServerError(400, f"{spec.name} must be within [{bounds.min}, {bounds.max}]; got {value}")
    return value


def _check_size(tensor: dm_env_rpc_pb2.Tensor, limit: int, name: str) -> None:
    """dm_env_rpc broadcasts a one-element payload to the tensor's shape: refuse shapes larger than a message
    could carry before anything is allocated."""
    elements = math.prod(max(d, 1) for d in tensor.shape)
    if elements > limit:
        raise ServerError(400, f"{name}: a tensor of shape {list(tensor.shape)} is over {limit:,} elements")
    if name == "text" and tensor.WhichOneof("payload") == "strings":
        if any(len(s) > MAX_TEXT_CHARS for s in tensor.strings.array):
            raise ServerError(400, f"text over {MAX_TEXT_CHARS:,} characters")


def _error(code: int, message: str) -> dm_env_rpc_pb2.EnvironmentResponse:
    return dm_env_rpc_pb2.EnvironmentResponse(error=status_pb2.Status(code=code, message=message))


class _Authenticator(grpc.ServerInterceptor):
    """Every call must carry `authorization: Bearer TOKEN` metadata naming a known token (constant-time compare);
    anything else ends UNAUTHENTICATED before the service sees it, with no detail."""

    def __init__(self, credentials: Credentials):
        self.credentials = credentials

        def refuse(request_iterator, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

        self._refusal = grpc.stream_stream_rpc_method_handler(refuse)

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata)
        if self.credentials.client_of_header(metadata.get("authorization")) is None:
            return self._refusal
        return continuation(handler_call_details)


def serve_dm_env_rpc(simulator: Simulator, host: str = "127.0.0.1", port: int = 8471,
                     **kwargs) -> DmEnvRpcServer:
    """A started `DmEnvRpcServer` (keyword arguments: its limits); `stop()` it when done."""
    return DmEnvRpcServer(simulator, host, port, **kwargs).start()
