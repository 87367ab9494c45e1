"""The gateway of a running `flnet up` stack, as clients at its edge meet it: grpcurl and
gRPC through Envoy and directly, gRPC-web as browsers send it, long watches, and what the
edge refuses before any control plane sees it."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import insecure_channel
from flnet.cli.stack import free_port
from tests.stack import FLNET, GRPCURL, RunningStack, grpcurl_services, start_stack, wait_http_ok

BEHAVE = Path(__file__).parent.parent / "fixtures" / "tools" / "behave"
FOREIGN_ORIGIN = "http://attacker.example"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("gateway") / "data")
    try:
        running.flnet("tool", "register", str(BEHAVE))
        yield running
    finally:
        running.stop()


def submit(stack: RunningStack, *config: str) -> str:
    args = [arg for pair in config for arg in ("-c", pair)]
    run = json.loads(stack.flnet("-o", "json", "run", "submit", "behave", *args).stdout)
    return str(run["name"])


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=60, check=False
    )


def access_log(stack: RunningStack) -> list[dict[str, Any]]:
    """The gateway's access log (Envoy flushes it within a second)."""
    time.sleep(1.5)
    path = stack.data / "logs" / "gateway-access.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def grpc_web_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_web(
    stack: RunningStack, method: str, message: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """A gRPC-web call as a browser's fetch makes it; returns the HTTP status and body."""
    request = urllib.request.Request(
        f"{stack.ui}/{method}",
        data=grpc_web_frame(message),
        method="POST",
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def trailers(body: bytes) -> dict[str, str]:
    """The trailer frame (flag 0x80) of a gRPC-web response body."""
    position = 0
    while position < len(body):
        flag, length = body[position], struct.unpack(">I", body[position + 1 : position + 5])[0]
        frame = body[position + 5 : position + 5 + length]
        if flag & 0x80:
            lines = frame.decode().strip().split("\r\n")
            return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        position += 5 + length
    return {}


@pytest.mark.timeout(180)
def test_grpcurl_lists_and_calls_through_the_gateway_and_directly(stack: RunningStack) -> None:
    run = submit(stack, "mode=finish")
    bearer = f"authorization: Bearer {stack.token()}"
    for address in (stack.gateway, stack.control):
        assert "flnet.api.control.v1.RunService" in grpcurl_services(address)
        got = grpcurl(
            "-H", bearer, "-d", json.dumps({"name": run}), address,
            "flnet.api.control.v1.RunService/GetRun",
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["run"]["name"] == run


NODE_CLIENT = Path(__file__).parents[2] / "examples" / "clients" / "node"


@pytest.mark.timeout(180)
def test_a_script_client_runs_a_tool_with_grpcurl(stack: RunningStack, tmp_path: Path) -> None:
    """The README's grpcurl session: the development issuer's `scripts` client logs in with
    its secret (client credentials), `flnet token` prints its token, and grpcurl submits a
    run and follows it to its end. It may run tools, not register them."""
    secrets = json.loads((stack.data / "oidc" / "dev-credentials.json").read_text())
    mine = [*FLNET, "--data-dir", str(tmp_path / "scripts")]
    subprocess.run(
        [*mine, "login", "--issuer", stack.endpoints["oidc"], "--client-credentials",
         "--client-id", "scripts", "--client-secret", secrets["scripts_client_secret"]],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    token = subprocess.run(
        [*mine, "token"], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    bearer = f"authorization: Bearer {token}"
    versions = grpcurl(
        "-H", bearer, "-d", json.dumps({"parent": "tenants/default/tools/behave"}),
        stack.control, "flnet.api.control.v1.ToolService/ListToolVersions",
    )  # fmt: skip
    assert versions.returncode == 0, versions.stderr
    version = json.loads(versions.stdout)["tool_versions"][0]["name"]  # grpcurl: proto names
    request = {"parent": "tenants/default", "run": {"tool_version": version, "config": {}}}
    created = grpcurl(
        "-H", bearer, "-d", json.dumps(request), stack.control,
        "flnet.api.control.v1.RunService/CreateRun",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    run = json.loads(created.stdout)["run"]["name"]
    watched = grpcurl(
        "-H", bearer, "-d", json.dumps({"name": run}), stack.control,
        "flnet.api.control.v1.RunService/WatchRun",
    )  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    assert '"to_state": "RUN_STATE_FINISHED"' in watched.stdout
    refused = grpcurl(
        "-H", bearer, "-d", json.dumps({"parent": "tenants/default/tools/behave"}),
        stack.control, "flnet.api.control.v1.ToolService/CreateToolVersion",
    )  # fmt: skip
    assert "PermissionDenied" in refused.stderr or "PERMISSION_DENIED" in refused.stderr

    # The example Node.js client, generated from proto/ (make node-client), through the
    # gateway: CreateRun, then WatchRun to the end.
    assert (NODE_CLIENT / "gen").is_dir(), "run `make node-client` first"
    node = subprocess.run(
        ["node", str(NODE_CLIENT / "submit.mjs"), stack.gateway, version],
        env={**os.environ, "FLNET_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert node.returncode == 0, node.stdout + node.stderr
    states = [json.loads(line)["state"] for line in node.stdout.splitlines()]
    assert states[0] == "PENDING" and states[-1] == "FINISHED", states


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_watch_through_the_gateway_outlives_the_default_route_timeout(
    stack: RunningStack,
) -> None:
    """Envoy's default route timeout (15 s) and a 5 min idle timeout would cut WatchRun: a
    run of 30 s that reports nothing while it sleeps is still followed to its end."""
    run = submit(stack, "mode=sleep", "seconds=30", "quiet=true")
    started = time.monotonic()
    states: list[int] = []
    async with insecure_channel(stack.gateway, stack.token()) as channel:
        async for res in rsg.RunServiceStub(channel).WatchRun(rs.WatchRunRequest(name=run)):
            states += [e.state_change.to_state for e in res.events if e.HasField("state_change")]
            if states and lifecycle.is_terminal(states[-1]):
                break
    assert states[-1] == lc.RUN_STATE_FINISHED
    assert time.monotonic() - started > 30


async def test_an_oversized_request_is_refused_before_the_control_plane(
    stack: RunningStack,
) -> None:
    name = "tenants/default/runs/" + "x" * (6 * 1024 * 1024)
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(stack.gateway, options=options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rsg.RunServiceStub(channel).GetRun(
                rs.GetRunRequest(name=name),
                metadata=(("authorization", f"Bearer {stack.token()}"),),
            )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    entry = [e for e in access_log(stack) if e["path"].endswith("/GetRun")][-1]
    assert entry["grpc_status"] == 8  # RESOURCE_EXHAUSTED, answered by the gateway
    assert entry["upstream"] is None


def forged_token(stack: RunningStack) -> str:
    """A token of the right shape and claims, signed by a key that is not the issuer's but
    naming the issuer's key id."""
    real = jwt.get_unverified_header(stack.token())
    claims = jwt.decode(stack.token(), options={"verify_signature": False})
    claims["sub"] = "mallory"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": real["kid"]})


@pytest.mark.parametrize("token", ["none", "forged", "garbage"])
async def test_a_missing_or_forged_token_is_unauthenticated_through_the_gateway(
    stack: RunningStack, token: str
) -> None:
    metadata: tuple[tuple[str, str], ...] = ()
    if token == "forged":
        metadata = (("authorization", f"Bearer {forged_token(stack)}"),)
    elif token == "garbage":
        metadata = (("authorization", "Bearer " + base64.b64encode(b"x" * 40).decode()),)
    async with grpc.aio.insecure_channel(stack.gateway) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rsg.RunServiceStub(channel).ListRuns(
                rs.ListRunsRequest(parent="tenants/default"), metadata=metadata
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_web_from_the_ui_origin_is_answered(stack: RunningStack) -> None:
    request = rs.ListRunsRequest(parent="tenants/default", page_size=5).SerializeToString()
    status, body = grpc_web(
        stack,
        "flnet.api.control.v1.RunService/ListRuns",
        request,
        {"origin": stack.ui, "authorization": f"Bearer {stack.token()}"},
    )
    assert status == 200
    assert trailers(body)["grpc-status"] == "0"
    assert body[0] == 0  # a message frame came first
    length = struct.unpack(">I", body[1:5])[0]
    listed = rs.ListRunsResponse.FromString(body[5 : 5 + length])
    assert all(run.name.startswith("tenants/default/runs/") for run in listed.runs)


def test_a_disallowed_origin_never_reaches_the_control_plane(stack: RunningStack) -> None:
    request = rs.ListRunsRequest(parent="tenants/default").SerializeToString()
    status, _ = grpc_web(
        stack,
        "flnet.api.control.v1.RunService/ListRuns",
        request,
        {"origin": FOREIGN_ORIGIN, "authorization": f"Bearer {stack.token()}"},
    )
    assert status == 403
    preflight = urllib.request.Request(
        f"{stack.ui}/flnet.api.control.v1.RunService/ListRuns",
        method="OPTIONS",
        headers={"origin": FOREIGN_ORIGIN, "access-control-request-method": "POST"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(preflight, timeout=10)
    assert refused.value.code == 403
    assert "access-control-allow-origin" not in refused.value.headers

    async def native_grpc() -> grpc.StatusCode:
        async with insecure_channel(stack.gateway, stack.token()) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await rsg.RunServiceStub(channel).ListRuns(
                    rs.ListRunsRequest(parent="tenants/default"),
                    metadata=(("origin", FOREIGN_ORIGIN),),
                )
        return denied.value.code()

    assert asyncio.run(native_grpc()) == grpc.StatusCode.PERMISSION_DENIED
    foreign = [e for e in access_log(stack) if e["origin"] == FOREIGN_ORIGIN]
    assert len(foreign) == 3
    # Refused by the gateway itself: HTTP 403, or PERMISSION_DENIED in a gRPC reply.
    assert all(e["upstream"] is None for e in foreign)
    assert [e["status"] == 403 or e["grpc_status"] == 7 for e in foreign] == [True] * 3


def test_a_preflight_from_the_ui_origin_allows_the_grpc_web_headers(stack: RunningStack) -> None:
    preflight = urllib.request.Request(
        f"{stack.ui}/flnet.api.control.v1.RunService/WatchRun",
        method="OPTIONS",
        headers={
            "origin": stack.ui,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web",
        },
    )
    with urllib.request.urlopen(preflight, timeout=10) as response:
        assert response.headers["access-control-allow-origin"] == stack.ui
        assert "authorization" in response.headers["access-control-allow-headers"]
        assert "grpc-status" in response.headers["access-control-expose-headers"]


async def test_the_runtime_and_orchestrator_apis_are_not_exposed(stack: RunningStack) -> None:
    for path in (
        "/flnet.api.runtime.v1.RuntimeService/FetchInput",
        "/flnet.api.orchestrator.v1.SessionService/Attach",
    ):
        async with grpc.aio.insecure_channel(stack.gateway) as channel:
            call: Any = channel.unary_unary(path)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(b"")
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_ui_pages_carry_the_security_headers_and_deep_links_load_the_app(
    stack: RunningStack,
) -> None:
    for path in ("/", "/tenants/default/runs/anything"):
        with urllib.request.urlopen(f"{stack.ui}{path}", timeout=10) as response:
            headers = response.headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            assert response.read().lstrip().lower().startswith(b"<!doctype html>")
    with urllib.request.urlopen(f"{stack.ui}/config.json", timeout=10) as response:
        config = json.loads(response.read())
    assert config["issuer"] == stack.endpoints["oidc"]
    assert config["clientId"] == "flnet-ui"
    discovery = f"{stack.endpoints['oidc']}/.well-known/openid-configuration"
    with urllib.request.urlopen(discovery, timeout=10) as response:
        assert json.loads(response.read())["issuer"] == stack.endpoints["oidc"]


def test_the_gateway_is_restarted_when_it_dies(stack: RunningStack) -> None:
    pid = subprocess.run(
        ["pgrep", "-f", f"envoy -c {stack.data}/gateway/envoy.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    subprocess.run(["kill", "-9", pid], check=True)
    wait_http_ok(f"{stack.ui}/config.json")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "gateway.crt", directory / "gateway.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_with_tls_browsers_and_grpc_clients_get_http2(stack: RunningStack, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    gateway = subprocess.Popen(
        [
            sys.executable, "-m", "flnet.gateway", "--listen", listen, "--admin", admin,
            "--control", stack.control, "--tls-cert", str(cert), "--tls-key", str(key),
            "--data-dir", str(tmp_path), "--access-log", str(tmp_path / "access.log"),
        ],
        env={**os.environ, "FLNET_OIDC_ISSUER": stack.endpoints["oidc"]},
    )  # fmt: skip
    try:
        wait_http_ok(f"http://{admin}/ready")
        host, port = listen.split(":")
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        insecure.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            insecure.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.selected_alpn_protocol() == "h2"
        insecure.set_alpn_protocols(["http/1.1"])
        with urllib.request.urlopen(
            f"https://{listen}/config.json", context=insecure, timeout=10
        ) as response:
            assert "max-age" in response.headers["strict-transport-security"]
        assert "flnet.api.control.v1.RunService" in grpcurl_services(listen, "-insecure")
        plain = grpcurl(listen, "list")  # no TLS: refused
        assert plain.returncode != 0
    finally:
        gateway.terminate()
        gateway.wait(30)
