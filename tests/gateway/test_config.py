"""The gateway's settings and rendered Envoy configuration, checked by Envoy itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flnet.gateway import GatewaySettings, render_config
from flnet.gateway.__main__ import envoy_argv
from flnet.gateway.config import write_config

ISSUER = "http://127.0.0.1:8080/oidc"


def settings(tmp_path: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:8080",
        "admin": "127.0.0.1:9901",
        "control": ("127.0.0.1:50051",),
        "data_dir": tmp_path,
        "oidc_issuer": ISSUER,
        "issuer_upstream": "127.0.0.1:8081",
        "ui_dir": tmp_path / "no-ui",
    }
    values.update(overrides)
    return GatewaySettings(**values)


def routes(config: str) -> list[Any]:
    document = yaml.safe_load(config)
    manager = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hosts = manager["typed_config"]["route_config"]["virtual_hosts"]
    result: list[Any] = hosts[0]["routes"]
    return result


def headers_of(route: Any) -> dict[str, str]:
    return {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}


def served_file(route: Any) -> str:
    return str(route.get("direct_response", {}).get("body", {}).get("filename", ""))


def cluster_of(route: Any) -> str | None:
    return route["route"]["cluster"] if isinstance(route.get("route"), dict) else None


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        envoy_argv(path, validate=True), capture_output=True, text=True, timeout=60, check=False
    )


def test_every_replica_is_an_endpoint_of_the_health_checked_control_cluster(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(
        render_config(settings(tmp_path, control=("127.0.0.1:50051", "127.0.0.1:50061")))
    )
    control = next(c for c in config["static_resources"]["clusters"] if c["name"] == "control")
    endpoints = control["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [50051, 50061]
    assert control["health_checks"][0]["grpc_health_check"] == {}
    protocol = control["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(protocol.values()))["explicit_http_config"]


def test_watch_run_has_no_route_or_idle_timeout(tmp_path: Path) -> None:
    watch = next(
        r
        for r in routes(render_config(settings(tmp_path)))
        if r["match"].get("path") == "/flnet.api.control.v1.RunService/WatchRun"
    )
    assert watch["route"]["timeout"] == "0s"
    assert watch["route"]["idle_timeout"] == "0s"


def test_only_the_public_api_health_and_reflection_reach_the_control_plane(
    tmp_path: Path,
) -> None:
    to_control = [
        r["match"] for r in routes(render_config(settings(tmp_path))) if cluster_of(r) == "control"
    ]
    prefixes = {m.get("path") or m.get("prefix") for m in to_control}
    assert all(
        p.startswith(("/flnet.api.control.v1.", "/grpc.health.v1.", "/grpc.reflection."))
        for p in prefixes
    ), prefixes


def test_the_built_ui_is_served_with_a_content_security_policy(tmp_path: Path) -> None:
    ui = tmp_path / "ui"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text("<!doctype html><title>FLNet</title>")
    (ui / "assets" / "index-abc123.js").write_text("console.log('x')")
    path = write_config(settings(tmp_path, ui_dir=ui))
    config = path.read_text()
    asset = next(r for r in routes(config) if r["match"].get("path") == "/assets/index-abc123.js")
    headers = headers_of(asset)
    assert headers["content-type"].startswith("text/javascript")
    assert "immutable" in headers["cache-control"]
    index = next(r for r in routes(config) if served_file(r).endswith("index.html"))
    csp = headers_of(index)
    assert "frame-ancestors 'none'" in csp["content-security-policy"]
    assert "script-src 'self'" in csp["content-security-policy"]
    done = validate(path)
    assert done.returncode == 0, done.stderr


def test_an_external_issuer_is_not_routed_and_the_ui_may_call_it(tmp_path: Path) -> None:
    external = "https://id.example/realms/flnet"
    path = write_config(settings(tmp_path, oidc_issuer=external, issuer_upstream=None))
    config = path.read_text()
    assert "issuer" not in {cluster_of(r) for r in routes(config)}
    parsed = json.dumps(yaml.safe_load(config))
    assert "connect-src 'self' https://id.example;" in parsed
    assert f'\\"issuer\\": \\"{external}\\"' in parsed
    done = validate(path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"listen": "8080"}, "host:port"),
        ({"control": ()}, "at least one control-plane address"),
        ({"control": ("127.0.0.1:99999",)}, "host:port"),
        ({"oidc_issuer": "id.example"}, "FLNET_OIDC_ISSUER"),
        ({"origins": ("https://ui.example/app",)}, "scheme://host"),
        ({"max_request_bytes": 10}, "at least 65536"),
        ({"tls_cert": Path("gateway.crt")}, "go together"),
        ({"tls_cert": Path("/no/cert"), "tls_key": Path("/no/key")}, "does not exist"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    tmp_path: Path, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        settings(tmp_path, **override)


def test_the_command_line_refuses_a_missing_control_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flnet.gateway", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "FLNET_OIDC_ISSUER": ISSUER, "FLNET_GATEWAY_CONTROL": ""},
    )
    assert done.returncode == 2
    assert "at least one control-plane address" in done.stderr


def test_strings_cannot_change_the_documents_structure(tmp_path: Path) -> None:
    hostile = 'http://a.example"\n  evil: [1]'
    config = render_config(settings(tmp_path, origins=("http://ui.example",), oidc_issuer=ISSUER))
    assert yaml.safe_load(config)
    with pytest.raises(ValueError):
        settings(tmp_path, origins=(hostile,))
