"""The wasmtime-py host on its own (no master): every case recorded from Buildbot 4.3.0's
HttpStatusPush (tests/fixtures/buildbot/ at the repository root) through ComponentHost,
plus the typed errors and the plugin's option checks."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from buildbot.config.errors import ConfigErrors
from support import Receiver, free_port

from buildbot_status_push import WasmStatusPush
from buildbot_status_push.component import (
    ComponentHost,
    ConfigError,
    Delivered,
    PushFailure,
    Skipped,
)

REPO = Path(__file__).resolve().parents[3]
WASM = Path(os.environ.get("STATUS_PUSH_WASM", REPO / "target" / "status-push.wasm"))
FIXTURES = REPO / "tests" / "fixtures" / "buildbot"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.json").is_file())


@pytest.fixture
def receiver():
    r = Receiver("fixture")
    r.start()
    yield r
    r.stop()


@pytest.mark.parametrize("case", CASES)
def test_recorded_buildbot_case(case: str, receiver: Receiver) -> None:
    folder = FIXTURES / case
    config = json.loads((folder / "config.json").read_text())
    url = urlsplit(config["serverUrl"])
    config["serverUrl"] = url._replace(netloc=f"127.0.0.1:{receiver.port}").geturl()
    expected = json.loads((folder / "expected.json").read_text())
    host = ComponentHost(WASM)
    host.configure_json(json.dumps(config))
    for event in ("started", "finished"):
        before = len(receiver.requests)
        outcome = host.report(event, (folder / f"{event}.json").read_text())
        sent = receiver.requests[before:]
        assert len(sent) == len(expected[event]), (event, outcome)
        if not expected[event]:
            assert isinstance(outcome, Skipped)
        for got, want in zip(sent, expected[event]):
            assert isinstance(outcome, Delivered) and outcome.status == 200
            assert got.path == want["path"]
            headers = {k.lower(): v for k, v in got.headers}
            for name, value in want["headers"].items():
                assert headers.get(name.lower()) == value, name
            if want["basic_auth"]:
                user, password = want["basic_auth"]
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                assert headers["authorization"] == f"Basic {token}"
            assert got.body == want["body"].encode("utf-8")


def test_config_error_names_the_key() -> None:
    host = ComponentHost(WASM)
    with pytest.raises(ConfigError) as e:
        host.configure_json(json.dumps({"serverUrl": "ftp://127.0.0.1/"}))
    assert e.value.key == "serverUrl"
    with pytest.raises(ConfigError) as e:
        host.configure_json(json.dumps({"serverUrl": "http://127.0.0.1/", "wantLogs": True}))
    assert e.value.key == "wantLogs"


def test_unreachable_is_a_typed_retryable_failure() -> None:
    host = ComponentHost(WASM)
    host.configure_json(
        json.dumps({"serverUrl": f"http://127.0.0.1:{free_port()}/", "maxAttempts": 2})
    )
    event = (FIXTURES / "default_start_finish" / "started.json").read_text()
    with pytest.raises(PushFailure) as e:
        host.report("started", event)
    assert (e.value.kind, e.value.retryable, e.value.attempts) == ("unreachable", True, 2)
    assert e.value.delivery_id


def test_a_store_stays_on_its_thread() -> None:
    host = ComponentHost(WASM)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            host.configure_json(json.dumps({"serverUrl": "http://127.0.0.1/"}))
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert errors and isinstance(errors[0], RuntimeError)


def test_master_cfg_errors_name_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUS_PUSH_WASM", str(WASM))
    with pytest.raises(ConfigErrors, match="maxAttempts"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", maxAttempts="eight")
    with pytest.raises(ConfigErrors, match="format_fn must be a Jinja template"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", format_fn=lambda build: build)
    with pytest.raises(ConfigErrors, match="caFile"):
        WasmStatusPush(serverUrl="https://127.0.0.1/", caFile="/etc/ssl/ca.pem")
    with pytest.raises(TypeError, match="wantlogs"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", wantlogs=True)
    with pytest.raises(ConfigErrors, match="cannot read"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", wasm_path="/nonexistent/status-push.wasm")
    assert WasmStatusPush(serverUrl="http://127.0.0.1/", wantSteps=True).name == "WasmStatusPush"
