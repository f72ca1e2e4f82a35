"""The hosts on their own (no master): every case recorded from Buildbot 4.3.0's
HttpStatusPush (tests/fixtures/buildbot/ at the repository root) through the native host
(the plugin's) and through wasmtime-py (a second runtime for the same .wasm), the typed
errors, the outbox, and the plugin's option checks."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from buildbot.config.errors import ConfigErrors
from support import Receiver, free_port, make_pki

from buildbot_status_push import (
    ConfigError,
    Delivered,
    Host,
    Outbox,
    OutboxError,
    PushFailure,
    Skipped,
    WasmStatusPush,
)
from buildbot_status_push.component import ComponentHost
from buildbot_status_push.host import Courier, shared_host

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


class NativeHost:
    """The native host with ComponentHost's two calls, so both runtimes run one test."""

    def configure_json(self, config: str) -> None:
        self.reporter = shared_host(WASM).reporter(config)

    def report(self, event: str, documents: str):
        return self.reporter.report(event, documents)


@pytest.mark.parametrize("runtime", ["native", "wasmtime-py"])
@pytest.mark.parametrize("case", CASES)
def test_recorded_buildbot_case(case: str, runtime: str, receiver: Receiver) -> None:
    folder = FIXTURES / case
    config = json.loads((folder / "config.json").read_text())
    url = urlsplit(config["serverUrl"])
    config["serverUrl"] = url._replace(netloc=f"127.0.0.1:{receiver.port}").geturl()
    expected = json.loads((folder / "expected.json").read_text())
    host = NativeHost() if runtime == "native" else ComponentHost(WASM)
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
    host = shared_host(WASM)
    with pytest.raises(ConfigError) as e:
        host.check_config(json.dumps({"serverUrl": "ftp://127.0.0.1/"}))
    assert e.value.key == "serverUrl"
    with pytest.raises(ConfigError) as e:
        host.reporter(json.dumps({"serverUrl": "http://127.0.0.1/", "wantLogs": True}))
    assert e.value.key == "wantLogs"
    with pytest.raises(ConfigError) as e:
        host.check_config(json.dumps({"serverUrl": "https://127.0.0.1/", "caFile": "/nope.pem"}))
    assert e.value.key == "caFile"


def test_unreachable_is_a_typed_retryable_failure() -> None:
    reporter = shared_host(WASM).reporter(
        json.dumps({"serverUrl": f"http://127.0.0.1:{free_port()}/", "maxAttempts": 2})
    )
    event = (FIXTURES / "default_start_finish" / "started.json").read_text()
    with pytest.raises(PushFailure) as e:
        reporter.report("started", event)
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
        WasmStatusPush(serverUrl="https://127.0.0.1/", caFile="/nonexistent/ca.pem")
    with pytest.raises(ConfigErrors, match="outbox must be"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", outbox=3)
    with pytest.raises(TypeError, match="wantlogs"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", wantlogs=True)
    with pytest.raises(ConfigErrors, match="cannot read"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", wasm_path="/nonexistent/status-push.wasm")
    assert WasmStatusPush(serverUrl="http://127.0.0.1/", wantSteps=True).name == "WasmStatusPush"
    # At checkconfig, not at startup: an outbox that cannot be created, and a renderable
    # in an option Buildbot does not render.
    with pytest.raises(ConfigErrors, match="cannot be created"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", outbox="/nonexistent/dir/o.sqlite")
    from buildbot.plugins import util

    with pytest.raises(ConfigErrors, match="caFile cannot be a renderable"):
        WasmStatusPush(serverUrl="https://127.0.0.1/", caFile=util.Interpolate("%(prop:x)s"))
    # Where Buildbot renders, a renderable is fine.
    WasmStatusPush(serverUrl="http://127.0.0.1/", password=util.Secret("pw"), user="bot")


def test_options_are_the_configuration_keys_from_their_one_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import fields

    from buildbot_status_push.host import CONFIG_KEYS, RELAY_ONLY_KEYS
    from buildbot_status_push.reporter import PLUGIN_OPTIONS, Options

    offered = {f.name for f in fields(Options)} - set(PLUGIN_OPTIONS)
    assert offered == set(CONFIG_KEYS) - set(RELAY_ONLY_KEYS)
    assert "maxBodyBytes" in offered and "inboundToken" not in offered
    monkeypatch.setenv("STATUS_PUSH_WASM", str(WASM))
    # Once a TypeError: every key the component takes is an option.
    WasmStatusPush(serverUrl="http://127.0.0.1/", maxBodyBytes=4096)


def _until(condition, seconds: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_outbox_keeps_until_delivered_by_the_courier(tmp_path: Path, receiver: Receiver) -> None:
    host = shared_host(WASM)
    dead: list = []
    outbox = Outbox(str(tmp_path / "outbox.sqlite"))
    port = free_port()
    down = json.dumps({"serverUrl": f"http://127.0.0.1:{port}/", "maxAttempts": 1})
    event = (FIXTURES / "default_start_finish" / "started.json").read_text()
    outbox.write(host, down, "started", event)
    courier = Courier(host, outbox, dead.append, 1.0)
    # The destination refuses: the event stays pending, and its circuit opens.
    _until(lambda: outbox.counts()[3] == 1)
    assert [e.event for e in outbox.pending()] == ["started"]
    [(destination, failures, waiting, last_error)] = outbox.circuits()
    assert (destination, waiting) == (f"http://127.0.0.1:{port}", 1)
    assert failures >= 1 and "unreachable" in (last_error or "")
    assert courier.stop()

    refused = json.dumps({"serverUrl": f"http://127.0.0.1:{receiver.port}/"})
    receiver.status = 400
    outbox = Outbox(str(tmp_path / "other.sqlite"))
    seq, _key = outbox.write(host, refused, "started", event)
    courier = Courier(host, outbox, dead.append, 1.0)
    _until(lambda: len(dead) == 1)
    assert dead[0].seq == seq and dead[0].delivery_id.startswith("sp_")
    assert "400" in (dead[0].last_error or "")
    assert [d.seq for d in outbox.dead_letters()] == [seq]
    receiver.status = 200
    assert outbox.redeliver(seq) == 1
    courier.wake()
    _until(lambda: outbox.counts()[0] == 0)
    assert outbox.dead_letters() == []
    with pytest.raises(OutboxError):
        outbox.redeliver(seq)
    assert courier.stop()


def test_an_outbox_key_seals_rows_and_a_new_configuration_reaches_queued_events(
    tmp_path: Path, receiver: Receiver
) -> None:
    host = shared_host(WASM)
    key = base64.b64encode(os.urandom(32)).decode()
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(str(path), key)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    old = json.dumps({"serverUrl": url, "user": "bot", "password": "old-S3CRET"})
    event = (FIXTURES / "default_start_finish" / "started.json").read_text()
    outbox.write(host, old, "started", event)
    stored = b"".join(
        p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("outbox.sqlite")
    )
    assert b"old-S3CRET" not in stored
    with pytest.raises(OutboxError, match="sealed with another key"):
        Outbox(str(path), base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(OutboxError, match="line 1 is not a key"):
        Outbox(str(path), "not a key")
    new = json.dumps({"serverUrl": url, "user": "bot", "password": "new-S3CRET"})
    assert outbox.reseal(host, new) == (1, 0)
    courier = Courier(host, outbox, lambda entry: None, 1.0)
    _until(lambda: len(receiver.requests) == 1)
    assert courier.stop()
    headers = dict((k.lower(), v) for k, v in receiver.requests[0].headers)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"bot:new-S3CRET").decode()


def test_a_postgresql_outbox_needs_an_outbox_key_at_checkconfig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from buildbot.plugins import util

    monkeypatch.setenv("STATUS_PUSH_WASM", str(WASM))
    monkeypatch.delenv("STATUS_PUSH_OUTBOX_KEY_FILE", raising=False)
    shared = "postgresql://ci@127.0.0.1:9/ci"
    with pytest.raises(ConfigErrors, match="keygen"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", outbox=shared)
    with pytest.raises(ConfigErrors, match="outboxKey"):
        WasmStatusPush(serverUrl="http://127.0.0.1/", outbox=shared, outboxKey="not a key")
    WasmStatusPush(serverUrl="http://127.0.0.1/", outbox=shared, outboxKey=util.Secret("k"))


def test_without_an_outbox_events_of_a_build_go_one_after_another(monkeypatch):
    from twisted.internet import defer

    import buildbot_status_push.reporter as module

    monkeypatch.setattr(module, "event_documents", lambda build: build)
    reporter = WasmStatusPush("http://127.0.0.1:9/hook", wasm_path=str(WASM), outbox=None)
    calls: list[defer.Deferred[None]] = []
    reporter._reporter = type("Fake", (), {"report": None})()  # type: ignore[assignment]
    reporter._in_thread = lambda fn, *args: calls.append(defer.Deferred()) or calls[-1]  # type: ignore[method-assign]
    reporter._reported = lambda outcome, event, build: None  # type: ignore[method-assign]
    build = {"buildid": 3, "number": 3, "builderid": 1}
    for event in ("started", "finished", "finished"):
        reporter._push_direct(event, build)
    assert len(calls) == 1, "the second waits for the first"
    calls[0].callback(None)
    assert len(calls) == 2
    calls[1].callback(None)
    calls[2].callback(None)
    assert reporter._direct == {}


def test_each_master_reports_only_its_own_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the `wamp` message queue every master receives every build event."""
    from types import SimpleNamespace

    reporter = WasmStatusPush("http://127.0.0.1:9/hook", wasm_path=str(WASM), outbox=None)
    # `master` is a read-only property (the service's parent): this one is master 1.
    monkeypatch.setattr(WasmStatusPush, "master", SimpleNamespace(masterid=1))
    pushed: list[tuple[str, int]] = []
    reporter._push_direct = lambda event, build, documents: pushed.append((event, build["buildid"]))  # type: ignore[method-assign]
    reports = [
        {"event": "started", "build": {"buildid": 7, "masterid": 2}},
        {"event": "started", "build": {"buildid": 8, "masterid": 1}},
        # A report generator's report: several builds, one of another master.
        {"builds": [{"buildid": 9, "masterid": 2, "complete": True}, {"buildid": 10, "masterid": 1, "complete": True}]},
    ]
    reporter.sendMessage(reports)
    assert pushed == [("started", 8), ("finished", 10)]


def test_the_courier_stops_within_its_grace_with_calls_hanging(tmp_path: Path) -> None:
    """100 builds whose receiver takes each request and never answers: stop returns within
    the grace (and far inside stopService's 10 s), the events left pending."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(200)
    held: list = []

    def hold() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=hold, daemon=True).start()
    port = listener.getsockname()[1]
    host = shared_host(WASM)
    outbox = Outbox(str(tmp_path / "outbox.sqlite"))
    config = json.dumps(
        {"serverUrl": f"http://127.0.0.1:{port}/hang", "timeoutSeconds": 120,
         "retryDeadlineSeconds": 120}
    )
    event = (FIXTURES / "default_start_finish" / "started.json").read_text()
    for buildid in range(100):
        documents = json.loads(event)
        documents["build"]["buildid"] = 1000 + buildid
        outbox.write(host, config, "started", json.dumps(documents))
    courier = Courier(host, outbox, lambda entry: None, 2.0)
    _until(lambda: len(held) >= 16)  # a courier's calls in flight, all hanging
    started = time.monotonic()
    assert courier.stop()
    assert time.monotonic() - started < 10
    assert outbox.counts()[0] == 100, "nothing lost"
    listener.close()


def test_a_host_panic_arrives_as_a_component_error() -> None:
    """Left to PyO3, a Rust panic is a BaseException that Buildbot's reporter does not
    catch, and that build's later events wait forever: it must be a ComponentError."""
    from buildbot_status_push import _native
    from buildbot_status_push.results import ComponentError

    with pytest.raises(ComponentError, match="deliberate panic"):
        _native._panic_in_host_for_tests()


@pytest.mark.skipif(
    not os.environ.get("STATUS_PUSH_FROM_WHEEL"),
    reason="test.sh installs the plugin from its wheel; a development install (maturin "
    "develop) is not one",
)
def test_the_plugin_runs_from_its_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    import buildbot_status_push
    from buildbot.plugins import reporters

    from buildbot_status_push.host import default_wasm_path

    package = Path(buildbot_status_push.__file__).resolve().parent
    # Installed into the virtualenv, not imported from this checkout.
    assert "site-packages" in package.parts, package
    assert package != Path(__file__).resolve().parents[1] / "buildbot_status_push"
    assert list(package.glob("_native*.so")), sorted(p.name for p in package.iterdir())
    # The component travels in the wheel, and is found there with nothing configured.
    monkeypatch.delenv("STATUS_PUSH_WASM", raising=False)
    assert default_wasm_path() == package / "status-push.wasm"
    assert default_wasm_path().read_bytes() == WASM.read_bytes()
    Host(str(default_wasm_path())).check_config(json.dumps({"serverUrl": "http://127.0.0.1/"}))
    # Buildbot finds the reporter through the package's entry point.
    assert reporters.WasmStatusPush is WasmStatusPush


def test_buildbot_43_spellings_are_taken_and_nonsense_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HttpStatusPush 4.3's verify (a CA bundle path, trusted alone), cert (one file or a
    pair) and skip_encoding, taken with requests' meaning; a bad one is a checkconfig
    error."""
    from buildbot_status_push.reporter import Options

    monkeypatch.setenv("STATUS_PUSH_WASM", str(WASM))
    pki = make_pki(tmp_path)
    url = "https://127.0.0.1/"
    # Each of these was a TypeError or a configuration error.
    WasmStatusPush(serverUrl=url, skip_encoding=True)
    WasmStatusPush(serverUrl=url, verify=str(pki.ca))
    WasmStatusPush(serverUrl=url, cert=str(pki.client))
    WasmStatusPush(serverUrl=url, cert=(str(pki.client_cert), str(pki.client_key)), verify=False)
    WasmStatusPush(serverUrl=url, verify=None, debug=None, skip_encoding=False)
    opts = Options(
        url, verify=pki.ca, cert=(pki.client_cert, str(pki.client_key)), skip_encoding=True
    ).component_options()
    assert (opts["verify"], opts["caFile"]) == (True, str(pki.ca))
    # requests trusts a `verify` bundle alone, without its default roots.
    assert opts["trustSystemRoots"] is False
    beside = Options(url, verify=pki.ca, trustSystemRoots=True).component_options()
    assert beside["trustSystemRoots"] is True
    assert Options(url, caFile=str(pki.ca)).component_options()["trustSystemRoots"] is None
    assert (opts["clientCertFile"], opts["clientKeyFile"]) == (
        str(pki.client_cert),
        str(pki.client_key),
    )
    assert opts["skipEncoding"] is True
    assert Options(url, cert=str(pki.client)).component_options()["clientKeyFile"] is None

    def refused(match: str, **kwargs: Any) -> None:
        with pytest.raises(ConfigErrors, match=match):
            WasmStatusPush(serverUrl=url, **kwargs)

    refused(r"verify \(caFile\): .*/nonexistent/ca.pem", verify="/nonexistent/ca.pem")
    refused("verify must be True, False or the path of a CA bundle", verify=3)
    refused(
        "verify names a CA bundle and caFile names another", verify=str(pki.ca), caFile=str(pki.ca)
    )
    refused("trustSystemRoots: false trusts caFile's certificates alone", trustSystemRoots=False)
    refused("cert must be the path of a PEM file", cert=(str(pki.client),))
    refused("cert must be the path of a PEM file", cert=3)
    refused(r"cert \(clientCertFile\): .*missing.pem", cert=str(tmp_path / "missing.pem"))
    refused(r"cert \(clientCertFile\): .*no private key", cert=str(pki.client_cert))
    refused(r"cert \(clientKeyFile\)", cert=(str(pki.client_cert), str(pki.ca)))
    refused("cert and clientCertFile", cert=str(pki.client), clientCertFile=str(pki.client))
    refused("skip_encoding must be True or False", skip_encoding="yes")


def _build_dict(documents: dict[str, Any]) -> dict[str, Any]:
    """A build dict as getDetailsForBuild fills it, from recorded documents."""
    build = dict(documents["build"])
    for key in ("buildrequest", "buildset", "builder", "properties"):
        build[key] = documents[key]
    return build


def test_a_generator_formatters_body_is_sent_as_the_stock_reporter_sends_it(
    receiver: Receiver,
) -> None:
    """A BuildStatusGenerator's MessageFormatterFunction(fn, 'json') report: fn's body, in
    the bytes Buildbot 4.3's HTTP client writes (json.dumps(body, default=toJson))."""
    import datetime

    from buildbot.util import toJson

    from buildbot_status_push.reporter import _events, formatted_documents

    documents = json.loads((FIXTURES / "default_start_finish" / "finished.json").read_text())
    build = _build_dict(documents)
    body = {
        "text": "greet #0: build successful",
        "at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "ratio": 0.1,
        "names": ["Grüße", "🚀"],
        "buildid": build["buildid"],
        "complete": True,
    }
    report = {"body": body, "type": "json", "subject": None, "builds": [build]}
    [(event, first, sent)] = _events(report)
    assert (event, first, sent) == ("finished", build, body)
    reporter = shared_host(WASM).reporter(
        json.dumps({"serverUrl": f"http://127.0.0.1:{receiver.port}/", "wantProperties": True})
    )
    outcome = reporter.report(event, formatted_documents(build, body))
    assert isinstance(outcome, Delivered), outcome
    [got] = receiver.requests
    assert got.body == json.dumps(body, default=toJson).encode()
    # A text formatter's body (the default MessageFormatter) is not sent by the stock
    # reporter: such a generator chooses builds, reported with our payload.
    assert _events({"body": "text", "type": "plain", "builds": [build]}) == [
        ("finished", build, None)
    ]
