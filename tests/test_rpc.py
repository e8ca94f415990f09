"""simulator/serving/rpc.py: the simulator over dm_env_rpc (gRPC) on 127.0.0.1 — dm_env_rpc's own compliance suites, its
`DmEnvAdaptor` as the client, steps of several connections (and of an HTTP client on the same pool) sampled in one
batch, and the hostile-input limits (issue 22)."""

import threading

import grpc
import numpy as np
import pytest
from dm_env_rpc.v1 import connection, dm_env_adaptor, dm_env_rpc_pb2, error, tensor_utils
from dm_env_rpc.v1.compliance import create_destroy_world, join_leave_world, reset, reset_world, step
from google.rpc import code_pb2

from unisim.simulator.core import Action, SamplerSettings, Simulator
from unisim.simulator.serving.client import RemoteSimulator
from unisim.simulator.serving.http import SimulatorServer
from unisim.simulator.serving.rpc import DmEnvRpcServer
from unisim.simulator.serving.sessions import SessionPool

H, W = 24, 40
IMAGE = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
TEXT = "push the block 1 to the left"


@pytest.fixture(scope="module")
def sim(tiny_workdirs):
    return Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=2), max_batch=4)


@pytest.fixture(scope="module")
def rpc_server(sim):
    with DmEnvRpcServer(sim, port=0, batch_window_s=0.0, max_sessions_per_client=1000) as server:
        yield server


def _connect(server, token: str | None = None):
    channel = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return connection.Connection(channel, metadata=[("x-unisim-client", token)] if token else None), channel


def _code(e: error.DmEnvRpcError) -> int:
    return e.code


# --------------------------------------------------------------------------------- dm_env_rpc's compliance

@pytest.fixture(scope="class")
def _attach(request, rpc_server):
    request.cls.server = rpc_server


class _Connected:
    def setUp(self):
        super().setUp()
        self._connection, self._channel = _connect(self.server)
        self.world = self._connection.send(dm_env_rpc_pb2.CreateWorldRequest(
            settings={"observation": tensor_utils.pack_tensor(IMAGE)})).world_name
        self.addCleanup(self._disconnect)  # after every tearDown: the suites' own leave the world in theirs

    def _disconnect(self):
        self._connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
        self._connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=self.world))
        self._channel.close()

    @property
    def connection(self):
        return self._connection

    @property
    def world_name(self):
        return self.world


@pytest.mark.usefixtures("_attach")
class TestCreateDestroyWorld(create_destroy_world.CreateDestroyWorld):
    required_world_settings = {}
    invalid_world_settings = {"gravity": tensor_utils.pack_tensor(9.8)}
    has_multiple_world_support = True

    def setUp(self):
        super().setUp()
        self._connection, self._channel = _connect(self.server)
        self.addCleanup(self._channel.close)

    @property
    def connection(self):
        return self._connection


@pytest.mark.usefixtures("_attach")
class TestJoinLeaveWorld(_Connected, join_leave_world.JoinLeaveWorld):
    invalid_join_settings = {"gravity": tensor_utils.pack_tensor(9.8)}


@pytest.mark.usefixtures("_attach")
class TestReset(_Connected, reset.Reset):
    def join_world(self):
        return self.connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=self.world)).specs


@pytest.mark.usefixtures("_attach")
class TestResetWorld(_Connected, reset_world.ResetWorld):
    pass


@pytest.mark.usefixtures("_attach")
class TestStep(_Connected, step.Step):
    def setUp(self):
        super().setUp()
        self._specs = self.connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=self.world)).specs

    @property
    def specs(self):
        return self._specs

    @property
    def required_actions(self):  # every step after the first needs text, controls or both
        return {self._text_uid: tensor_utils.pack_tensor(TEXT)}

    @property
    def _text_uid(self):
        return next(uid for uid, spec in self._specs.actions.items() if spec.name == "text")

    # The suite's value for a string action is "", and it sends each action ALONE: here an empty text is no action,
    # and a step needs text or controls. The two tests below are the suite's own with the text action given a text
    # (controls alone, at their bounds, still step alone); the refusal of "" alone is asserted after them.
    def test_can_send_each_action_individually(self):
        self.step()
        for uid, spec in self.specs.actions.items():
            value = TEXT if uid == self._text_uid else step._create_test_value(spec)
            self.step(actions={uid: tensor_utils.pack_tensor(value)})

    def test_can_send_broadcastable_actions(self):
        self.step()
        controls = next(uid for uid, spec in self.specs.actions.items() if spec.name == "controls")
        tensor = tensor_utils.pack_tensor(0.0)
        tensor.shape[:] = self.specs.actions[controls].shape
        self.step(actions={controls: tensor})

    def test_an_empty_text_alone_is_no_action(self):
        self.step()
        with self.assertRaisesRegex(error.DmEnvRpcError, "text, controls or both"):
            self.step(actions={self._text_uid: tensor_utils.pack_tensor("")})


# --------------------------------------------------------------------------------------- DmEnvAdaptor

def test_dm_env_adaptor_steps_a_world(rpc_server, sim):
    conn, channel = _connect(rpc_server)
    env, world = dm_env_adaptor.create_and_join_world(conn, {"observation": IMAGE, "seed": 3}, {})
    assert env.observation_spec()["frames"].shape == (-1, H, W, 3)
    assert set(env.action_spec()) == {"text", "controls"} and env.action_spec()["controls"].shape == (2,)
    first = env.reset()
    assert first.first() and first.observation["frames"].shape[1:] == (H, W, 3)
    timestep = env.step({"text": TEXT, "controls": np.array([0.01, -0.02])})
    assert timestep.mid() and timestep.observation["frames"].shape == (16, H, W, 3)
    assert timestep.observation["steps"] == 1
    # the same world locally: the same seed and action give the same frames
    local = sim.new_session(IMAGE, seed=3)
    expected, = sim.step_sessions([local], [Action(text=TEXT, controls=np.array([0.01, -0.02]))])
    sim.close_session(local)
    np.testing.assert_allclose(timestep.observation["frames"], expected, atol=2)
    with pytest.raises(error.DmEnvRpcError, match="text, controls or both"):
        env.step({})
    assert env.step({"text": TEXT}).mid()  # the stream still serves after an error
    env.close()
    conn.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
    channel.close()


def test_connections_and_http_clients_are_sampled_in_one_batch(sim):
    pool = SessionPool(sim, batch_window_s=5.0)  # a full batch (max_batch 4) is sampled as soon as it is waiting
    with DmEnvRpcServer(None, port=0, pool=pool) as rpc, SimulatorServer(None, port=0, pool=pool) as http:
        envs = []
        for _ in range(2):
            conn, channel = _connect(rpc)
            env, _ = dm_env_adaptor.create_and_join_world(conn, {"observation": IMAGE}, {})
            env.reset()
            envs.append((env, channel))
        remote = RemoteSimulator(http.url)
        sessions = [remote.new_session(IMAGE) for _ in range(2)]
        before, calls = pool.stats(), sim.sampler_calls
        results = []
        threads = [threading.Thread(target=lambda e=e: results.append(e.step({"text": TEXT}).observation["frames"]))
                   for e, _ in envs]
        threads += [threading.Thread(target=lambda s=s: results.append(
            remote.step_sessions([s], [Action(text=TEXT)])[0])) for s in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        after = pool.stats()
        assert len(results) == 4 and all(r.shape == (16, H, W, 3) for r in results)
        assert (after["steps"] - before["steps"], after["batches"] - before["batches"]) == (4, 1)
        assert sim.sampler_calls == calls + 1
        for env, channel in envs:
            env.close()
            channel.close()


# ------------------------------------------------------------------------------------------------ limits

def test_hostile_requests_get_errors_and_the_stream_goes_on(sim):
    with DmEnvRpcServer(sim, port=0, max_sessions_per_client=2, max_request_bytes=1 << 20) as server:
        conn, channel = _connect(server, token="greedy")
        bomb = dm_env_rpc_pb2.Tensor(uint8s=dm_env_rpc_pb2.Tensor.Uint8Array(array=b"\x07"), shape=[100000, 100000, 3])
        with pytest.raises(error.DmEnvRpcError, match="over 1,048,576 elements") as e:
            conn.send(dm_env_rpc_pb2.CreateWorldRequest(settings={"observation": bomb}))
        assert _code(e.value) == code_pb2.INVALID_ARGUMENT
        with pytest.raises(error.DmEnvRpcError, match="seed"):
            conn.send(dm_env_rpc_pb2.CreateWorldRequest(settings={"seed": tensor_utils.pack_tensor(-1)}))
        worlds = [conn.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name for _ in range(2)]
        with pytest.raises(error.DmEnvRpcError) as e:  # this client's quota is spent; others still get worlds
            conn.send(dm_env_rpc_pb2.CreateWorldRequest())
        assert _code(e.value) == code_pb2.RESOURCE_EXHAUSTED
        other, other_channel = _connect(server, token="polite")
        other.send(dm_env_rpc_pb2.CreateWorldRequest())
        specs = conn.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=worlds[0])).specs
        text = next(uid for uid, spec in specs.actions.items() if spec.name == "text")
        conn.send(dm_env_rpc_pb2.StepRequest())
        with pytest.raises(error.DmEnvRpcError, match="over 2,048 characters"):
            conn.send(dm_env_rpc_pb2.StepRequest(actions={text: tensor_utils.pack_tensor("x" * 5000)}))
        assert conn.send(dm_env_rpc_pb2.StepRequest(actions={text: tensor_utils.pack_tensor(TEXT)},
                                                    requested_observations=[2])).observations[2].int64s.array == [1]
        channel.close()
        other_channel.close()


def test_a_world_whose_session_expired_says_so_and_resets(sim):
    import time

    with DmEnvRpcServer(sim, port=0, session_timeout_s=0.2, reaper_interval_s=0.05) as server:
        conn, channel = _connect(server)
        world = conn.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name
        conn.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
        time.sleep(1.0)  # idle past session_timeout_s: the pool drops the session
        with pytest.raises(error.DmEnvRpcError, match="unknown or expired session") as e:
            conn.send(dm_env_rpc_pb2.StepRequest())
        assert _code(e.value) == code_pb2.NOT_FOUND
        conn.send(dm_env_rpc_pb2.ResetRequest())  # a new session from the creation settings
        frames = conn.send(dm_env_rpc_pb2.StepRequest(requested_observations=[1])).observations[1]
        assert list(frames.shape) == [1, H, W, 3]
        channel.close()


def test_a_connection_that_drops_leaves_its_world_and_takes_the_worlds_it_made(rpc_server):
    import time

    maker, maker_channel = _connect(rpc_server)
    world = maker.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name
    player, player_channel = _connect(rpc_server)
    player.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
    player_channel.close()  # gone without leaving
    other, other_channel = _connect(rpc_server)
    deadline = time.monotonic() + 10
    while True:  # the server sees the stream end shortly after
        try:
            other.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
            break
        except error.DmEnvRpcError as e:
            assert "another connection has joined" in str(e) and time.monotonic() < deadline
            time.sleep(0.05)
    other.send(dm_env_rpc_pb2.LeaveWorldRequest())
    sessions = rpc_server.pool.stats()["sessions"]
    maker_channel.close()  # its world goes with it
    deadline = time.monotonic() + 10
    while rpc_server.pool.stats()["sessions"] == sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rpc_server.pool.stats()["sessions"] == sessions - 1
    with pytest.raises(error.DmEnvRpcError, match="unknown world"):
        other.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
    other_channel.close()
