"""Serving beyond the loopback (simulator/serving/web.py, http.py, rpc.py, client.py; issue 35): bearer tokens on
every HTTP route and gRPC call, quotas keyed on the authenticated client, HTTPS and gRPC TLS with a self-signed
certificate made here, the refusal to listen beyond this machine without a token, and the gRPC idle limit."""

import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from dm_env_rpc.v1 import dm_env_adaptor, dm_env_rpc_pb2

from unisim.schemas.errors import UserError
from unisim.simulator.core import Action, SamplerSettings, Simulator
from unisim.simulator.serving.client import RemoteSimulator, connect_dm_env_rpc
from unisim.simulator.serving.http import SimulatorServer
from unisim.simulator.serving.protocol import ServerError
from unisim.simulator.serving.rpc import DmEnvRpcServer
from unisim.simulator.serving.sessions import SessionPool
from flood import step_latencies
from unisim.simulator.serving.web import AccessOptions, Credentials, check_exposure
from unisim.simulator.vector import SimulatorVectorEnv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALICE, BOB = "alice-" + "a" * 26, "bob-" + "b" * 28
PUSH = Action(controls=[0.01, -0.02])


@pytest.fixture(scope="module")
def sim(tiny_workdirs):
    return Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=2), max_batch=8)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(f"# actors\nalice {ALICE}\n\n{BOB}\n")
    return str(path)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _raw(address, method, path, body=None, headers=None, context=None) -> tuple[int, dict, dict]:
    """One request on a fresh connection: (status, JSON answer, headers)."""
    connection = (http.client.HTTPSConnection(*address, timeout=60, context=context) if context
                  else http.client.HTTPConnection(*address, timeout=60))
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.headers)
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------------ credentials

def test_token_files_the_environment_and_exposure(tokens, tmp_path):
    credentials = Credentials.load(tokens)
    assert credentials.client(ALICE) == "alice" and credentials.client(BOB).startswith("token-")
    assert BOB not in credentials.client(BOB)  # an unnamed token's client name never shows the token
    assert all(credentials.client(wrong) is None for wrong in (ALICE[:-1], ALICE + "a", "", None))
    assert credentials.client_of_header(f"Bearer {ALICE}") == "alice"
    assert credentials.client_of_header(f"Basic {ALICE}") is None
    assert Credentials.load(environ={"UNISIM_AUTH_TOKEN": BOB}).client(BOB)
    assert not Credentials.load(environ={}).required
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    with pytest.raises(UserError, match="guessable"):
        Credentials.load(str(short))
    with pytest.raises(UserError, match="both a certificate"):
        Credentials.load(tokens, certfile=tokens)

    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(host, None, insecure=False)
    for host in ("0.0.0.0", "", "10.1.2.3", "example.org"):
        with pytest.raises(UserError, match="without authentication"):
            check_exposure(host, None, insecure=False)
        check_exposure(host, None, insecure=True)
        check_exposure(host, credentials, insecure=False)
    with pytest.raises(UserError, match="without authentication"):
        AccessOptions(host="0.0.0.0").credentials()


def test_the_cli_refuses_a_public_address_without_a_token_before_loading_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "UNISIM_AUTH_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "serve", "--checkpoint", str(tmp_path / "none"),
                             "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 2 and "without authentication" in result.stderr, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------- HTTP

def test_http_refuses_a_missing_or_wrong_token_on_every_route_and_serves_the_right_one(sim, tokens):
    with SimulatorServer(sim, port=0, credentials=Credentials.load(tokens)) as server:
        for method, path in [("GET", "/healthz"), ("GET", "/v1/info"), ("GET", "/v1/stats"), ("POST", "/v1/sessions"),
                             ("POST", "/v1/sessions/x/step"), ("DELETE", "/v1/sessions/x"), ("POST", "/v1/step"),
                             ("GET", "/no/such/route")]:
            for headers in ({}, {"Authorization": f"Bearer {ALICE}x"}, {"Authorization": ALICE},
                            {"X-Unisim-Client": "alice"}):
                status, answer, sent = _raw(server.address, method, path, {"observation": None}, headers)
                assert (status, answer) == (401, {"error": "unauthenticated"}), (method, path, headers)
                assert sent["WWW-Authenticate"] == "Bearer" and sent["Connection"] == "close"
        assert _raw(server.address, "GET", f"/healthz?access_token={ALICE}")[:2] == (200, {"ok": True})

        with pytest.raises(ServerError, match="401"):
            RemoteSimulator(server.url, token=ALICE[:-1])
        client = RemoteSimulator(server.url, token=ALICE, timeout=300)
        session = client.new_session(None, seed=0)
        frames, = client.step_sessions([session], [PUSH])
        assert frames.shape == (16, 24, 40, 3)
        client.close_session(session)
        client.close()


def test_quotas_key_on_the_authenticated_client_not_on_a_header(sim, tokens):
    with SimulatorServer(sim, port=0, credentials=Credentials.load(tokens), max_sessions_per_client=2) as server:
        def create(token, name):
            headers = {"Authorization": f"Bearer {token}", "X-Unisim-Client": name}
            return _raw(server.address, "POST", "/v1/sessions", {"observation": None}, headers)[0]

        # a client that renames itself on every request is still one client: its token
        assert [create(ALICE, f"rotating-{i}") for i in range(3)] == [201, 201, 429]
        assert create(BOB, "rotating-0") == 201  # another token is another client


def test_https_with_a_self_signed_certificate(sim, tokens, certificate):
    cert, key = certificate
    with SimulatorServer(sim, port=0, credentials=Credentials.load(tokens, cert, key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with pytest.raises(ssl.SSLCertVerificationError):  # the system's roots do not know it
            RemoteSimulator(server.url, token=ALICE)
        with socket.create_connection(server.address, timeout=10) as plain:  # plain text to a TLS port: dropped
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = plain.recv(1024)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1")
        client = RemoteSimulator(server.url, token=ALICE, ca_file=cert, timeout=300)
        frames, = client.step_sessions([client.new_session(None, seed=1)], [PUSH])
        assert frames.shape == (16, 24, 40, 3)
        envs = SimulatorVectorEnv(client, None, num_envs=2, max_steps=2)  # RL code's VectorEnv over HTTPS + token
        observations, _ = envs.reset(seed=0)
        observations, *_ = envs.step({"text": ["push the block 1 to the left"] * 2,
                                      "controls": np.zeros((2, 2), np.float32)})
        assert observations.shape == (2, 24, 40, 3)
        envs.close()
        client.close()


def test_an_unauthenticated_flood_does_not_slow_an_authenticated_clients_steps(sim, tokens):
    """Issue 21's load test with credentials: the victim steps with its token, idle and then while two threads
    flood the server with token-less and wrong-token requests (bodies never read) and half-open connections."""
    with SimulatorServer(sim, port=0, credentials=Credentials.load(tokens), read_timeout_s=2.0) as target:
        victim = RemoteSimulator(target.url, token=ALICE, timeout=300)
        session = victim.new_session(np.zeros((24, 40, 3), np.uint8), seed=0)
        victim.step_sessions([session], [PUSH])  # compiled and warm

        sent = []
        floods = [({}, {"observation": None}), ({"Authorization": "Bearer " + "x" * 32}, {"text": "y" * 100_000}),
                  ({"Authorization": f"Bearer {BOB[:-1]}"}, {"steps": [{"session": "s", "text": "t"}] * 500})]

        def flood_once():
            for headers, body in floods:
                sent.append(_raw(target.address, "POST", "/v1/sessions", body, headers)[0])

        idle, busy = step_latencies(lambda: victim.step_sessions([session], [PUSH]), flood_once, target.address)
        victim.close()
        assert target.stats()["sessions"] == 1  # the flood made none
    idle_median, busy_median = float(np.median(idle)), float(np.median(busy))
    print(f"\nauthenticated step latency: idle median {idle_median * 1e3:.0f} ms, during an unauthenticated flood "
          f"{busy_median * 1e3:.0f} ms ({busy_median / idle_median:.2f}×); flood requests {len(sent)}: "
          f"{sorted(set(sent))}")
    assert set(sent) == {401} and len(sent) > 20
    assert busy_median <= 2 * idle_median


# ---------------------------------------------------------------------------------------------------- gRPC

def _create_world(connection) -> dm_env_rpc_pb2.EnvironmentResponse:
    return connection.send(dm_env_rpc_pb2.CreateWorldRequest(settings={}))


def test_grpc_refuses_a_missing_or_wrong_token_and_serves_the_right_one_over_tls(sim, tokens, certificate):
    cert, key = certificate
    pool = SessionPool(sim)
    with DmEnvRpcServer(None, port=0, pool=pool, credentials=Credentials.load(tokens, cert, key)) as server:
        for token in (None, ALICE[:-1], "x" * 40):
            with connect_dm_env_rpc(server.address, token=token or "", ca_file=cert) as connection:
                with pytest.raises(grpc.RpcError) as refused:
                    _create_world(connection)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert refused.value.details() == "unauthenticated"
        with pytest.raises(ConnectionError):  # plain text to a TLS port never becomes ready
            connect_dm_env_rpc(server.address, token=ALICE, timeout=2)
        with connect_dm_env_rpc(server.address, token=ALICE, ca_file=cert) as connection:
            env, world = dm_env_adaptor.create_and_join_world(connection, {"seed": np.int64(0)}, {})
            assert env.reset().observation["frames"].shape[1:] == (24, 40, 3)
            timestep = env.step({"controls": np.asarray([0.01, -0.02])})
            assert timestep.observation["frames"].shape == (16, 24, 40, 3)
            env.close()
            connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
        assert pool.stats()["sessions"] == 0


def test_an_idle_grpc_stream_is_closed_and_its_worlds_destroyed(sim):
    pool = SessionPool(sim)
    with DmEnvRpcServer(None, port=0, pool=pool, idle_timeout_s=1.0, max_connections=2) as server:
        idle = connect_dm_env_rpc(server.address)
        idle.send(dm_env_rpc_pb2.CreateWorldRequest(settings={}))
        assert pool.stats()["sessions"] == 1
        began = time.monotonic()
        while pool.stats()["sessions"] and time.monotonic() < began + 20:  # silent: released after ~1 s
            time.sleep(0.1)
        assert pool.stats()["sessions"] == 0
        print(f"\nan idle stream (idle_timeout_s 1.0) released its world after {time.monotonic() - began:.1f} s")
        with pytest.raises(grpc.RpcError) as closed:
            _create_world(idle)
        assert closed.value.code() == grpc.StatusCode.CANCELLED
        idle.close()
        # a stream that keeps talking is not idle, and the released slots serve new connections
        with connect_dm_env_rpc(server.address) as busy:
            for _ in range(4):
                assert _create_world(busy).world_name
                time.sleep(0.5)
            with connect_dm_env_rpc(server.address) as other:
                assert _create_world(other).world_name
                assert pool.stats()["sessions"] == 5
