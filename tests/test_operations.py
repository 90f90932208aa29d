"""Operations: the metrics endpoint, the RPC access log with request ids, and GetStats."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from identity.cli import main
from identity.client import IdentityClient, link_request
from identity.logs import JsonFormatter, formatter
from identity.metrics import MetricsEndpoint, RpcCollector, RpcMetrics, split_address
from identity.rpc.metrics import ACCESS_LOG
from identity.v1 import common_pb2, events_pb2 as ev

LINK = "/identity.v1.IdentityService/Link"


class Samples:
    """One scrape of /metrics: sample values by name and labels."""

    def __init__(self, text: str):
        self.values: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)


def scrape_url(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return Samples(reply.read().decode())


@pytest.fixture
def scrape(server) -> Iterator[Callable[[], Samples]]:
    """Scrapes the server's metrics from an endpoint on a free port."""
    endpoint = MetricsEndpoint(server.app.metrics, "127.0.0.1:0")
    assert endpoint.port > 0
    yield lambda: scrape_url(endpoint.url)
    endpoint.stop()


def capture_access_log(log_format: str) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    level = ACCESS_LOG.level
    ACCESS_LOG.addHandler(handler)
    ACCESS_LOG.setLevel(logging.INFO)
    yield stream
    ACCESS_LOG.removeHandler(handler)
    ACCESS_LOG.setLevel(level)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    yield from capture_access_log("json")


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    yield from capture_access_log("text")


def log_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def trailing(call_or_error) -> dict[str, str]:
    return {key: value for key, value in call_or_error.trailing_metadata() or ()
            if not key.endswith("-bin")}


def event(event_id: str, who: str) -> ev.Event:
    message = ev.Event(event_id=event_id, identifier=common_pb2.Identifier(
        kind=common_pb2.IDENTIFIER_KIND_EMAIL, value=who.split(":", 1)[1]),
        view=ev.ProductEvent(product_id="K-42", price=39.99))
    message.time.FromMilliseconds(1_767_000_000_000)
    return message


# -- metrics ----------------------------------------------------------------


def test_scrape_counts_calls_by_method_and_status_code_and_times_them(client, scrape):
    before = scrape()
    client.link("customer_id:C-1", "email:a@example.com")
    client.link("email:a@example.com", "phone:+447700900123")
    with pytest.raises(grpc.RpcError):
        client.link("phone:call me")
    with pytest.raises(grpc.RpcError):
        client.resolve("email:nobody@example.com")
    after = scrape()

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    link = dict(grpc_service="identity.v1.IdentityService", grpc_method="Link")
    resolve = dict(grpc_service="identity.v1.IdentityService", grpc_method="Resolve")
    assert moved("grpc_server_handled_total", **link, grpc_code="OK") == 2
    assert moved("grpc_server_handled_total", **link, grpc_code="INVALID_ARGUMENT") == 1
    assert moved("grpc_server_handled_total", **resolve, grpc_code="NOT_FOUND") == 1
    assert moved("grpc_server_handling_seconds_count", **link) == 3
    assert moved("grpc_server_handling_seconds_sum", **link) > 0
    assert after("grpc_server_handling_seconds_bucket", **link, le="+Inf") == \
        after("grpc_server_handling_seconds_count", **link)
    assert after("grpc_server_handling_seconds_bucket", **link, le="0.0005") <= \
        after("grpc_server_handling_seconds_bucket", **link, le="60.0")


def test_rpc_histogram_buckets_are_cumulative_and_a_bound_counts_in_its_own_bucket():
    rpc = RpcMetrics("identity.v1.IdentityService", "Link")
    for code, seconds in [("OK", 0.0004), ("OK", 0.0005), ("NOT_FOUND", 0.003), ("OK", 99.0)]:
        rpc.done(code, seconds)
    handled, latency = RpcCollector({"/identity.v1.IdentityService/Link": rpc}).collect()
    assert {s.labels["grpc_code"]: s.value for s in handled.samples} == {"NOT_FOUND": 1, "OK": 3}
    values = {(s.name, s.labels.get("le")): s.value for s in latency.samples}
    assert values[("grpc_server_handling_seconds_bucket", "0.0005")] == 2
    assert values[("grpc_server_handling_seconds_bucket", "0.0025")] == 2
    assert values[("grpc_server_handling_seconds_bucket", "0.005")] == 3
    assert values[("grpc_server_handling_seconds_bucket", "60.0")] == 3
    assert values[("grpc_server_handling_seconds_bucket", "+Inf")] == 4
    assert values[("grpc_server_handling_seconds_count", None)] == 4
    assert values[("grpc_server_handling_seconds_sum", None)] == pytest.approx(99.0039)


def test_scrape_counts_link_outcomes_merges_refusals_and_events(client, scrape):
    client.link("customer_id:C-1", "email:a@example.com")  # created
    client.link("email:b@example.com", "phone:+447700900123")  # created
    client.link("email:a@example.com", "email:b@example.com")  # merged
    client.link("customer_id:C-1", "customer_id:C-2")  # refused: two customer ids
    client.link_stream([[link_request("email:c@example.com"),
                         link_request("email:c@example.com", "device_id:d-1")]])  # created, added
    client.track([event("e-1", "email:a@example.com"), event("e-2", "email:a@example.com")])
    client.track([event("e-1", "email:a@example.com")])  # a duplicate
    samples = scrape()
    assert samples("identity_link_outcomes_total", outcome="created") == 3
    assert samples("identity_link_outcomes_total", outcome="added") == 1
    assert samples("identity_link_outcomes_total", outcome="merged") == 1
    assert samples("identity_link_outcomes_total", outcome="refused_conflict") == 1
    assert samples("identity_merges_total") == 1
    assert samples("identity_link_refusals_total", reason="conflict") == 1
    assert samples("identity_link_refusals_total", reason="limit") == 0
    assert samples("identity_events_tracked_total") == 2
    assert samples("identity_event_duplicates_total") == 1


def test_scrape_reads_what_is_stored_from_lmdb(client, scrape):
    empty = scrape()
    assert empty("identity_persons") == 0
    client.link("customer_id:C-1", "email:a@example.com")
    client.link("device_id:d-1")
    client.track([event("e-1", "email:a@example.com")])
    samples = scrape()
    assert samples("identity_persons") == 2
    assert samples("identity_identifiers") == 3
    assert samples("identity_links") == 2
    assert samples("identity_events") == 1
    assert samples("identity_lmdb_entries", db="persons") == 2
    assert samples("identity_lmdb_entries", db="ids") == 3
    assert samples("identity_lmdb_map_size_bytes") == 64 * 1024 * 1024
    assert 0 < samples("identity_lmdb_used_bytes") <= samples("identity_lmdb_file_bytes")
    assert samples("process_start_time_seconds") > 0


def test_metrics_addresses_take_host_and_port():
    assert split_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert split_address("[::1]:0") == ("::1", 0)
    assert split_address(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(ValueError):
        split_address("9464")


# -- access log and request ids -----------------------------------------------


def test_json_log_line_carries_the_request_id_the_client_sent(client, json_log):
    reply, call = client.identity.Link.with_call(
        link_request("customer_id:C-1", "email:a@example.com"),
        metadata=[("x-request-id", "till-17-0042")])
    assert reply.person_id == "C-1"
    assert trailing(call)["x-request-id"] == "till-17-0042"
    [line] = [entry for entry in log_lines(json_log) if entry["method"] == LINK]
    assert line["request_id"] == "till-17-0042"
    assert (line["code"], line["level"], line["logger"]) == ("OK", "INFO", "identity.rpc.access")
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert line["time"].endswith("Z")


def test_a_call_without_a_request_id_gets_a_new_one_back(client, json_log):
    ids = []
    for value in ("a@example.com", "b@example.com"):
        _, call = client.identity.Link.with_call(link_request(f"email:{value}"))
        ids.append(trailing(call)["x-request-id"])
    assert ids[0] and ids[1] and ids[0] != ids[1]
    assert [entry["request_id"] for entry in log_lines(json_log)
            if entry["method"] == LINK] == ids


def test_a_refused_call_keeps_its_error_details_and_returns_its_request_id(client, json_log):
    with pytest.raises(grpc.RpcError) as caught:
        client.identity.Link(link_request("phone:call me"),
                             metadata=[("x-request-id", "bad-1")])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trailing(caught.value)["x-request-id"] == "bad-1"
    assert rpc_status.from_call(caught.value).details  # the field violations still arrive
    [line] = [entry for entry in log_lines(json_log) if entry["request_id"] == "bad-1"]
    assert line["code"] == "INVALID_ARGUMENT"


def test_a_call_refused_for_its_key_is_counted_and_logged(server, scrape, json_log):
    with IdentityClient(server.address, api_key="") as anonymous:
        with pytest.raises(grpc.RpcError) as caught:
            anonymous.identity.Link(link_request("email:a@example.com"),
                                    metadata=[("x-request-id", "no-key")])
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert trailing(caught.value)["x-request-id"] == "no-key"
    assert scrape()("grpc_server_handled_total", grpc_service="identity.v1.IdentityService",
                    grpc_method="Link", grpc_code="UNAUTHENTICATED") == 1
    [line] = [entry for entry in log_lines(json_log) if entry["request_id"] == "no-key"]
    assert line["code"] == "UNAUTHENTICATED"


def test_stats_need_the_admin_role(server, client):
    query_key = client.create_key("query", label="stats test").secret_key
    with IdentityClient(server.address, api_key=query_key) as query:
        with pytest.raises(grpc.RpcError) as caught:
            query.stats()
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_streamed_replies_are_logged_once_when_the_stream_ends(client, json_log):
    client.link("email:a@example.com", "phone:+447700900123")
    replies = list(client.merge_log())
    assert replies
    lines = [entry for entry in log_lines(json_log)
             if entry["method"] == "/identity.v1.AuditService/MergeLog"]
    assert [line["code"] for line in lines] == ["OK"]


def test_text_log_line_names_method_code_duration_and_request_id(client, text_log):
    client.identity.Link(link_request("email:a@example.com"), metadata=[("x-request-id", "r-9")])
    [line] = text_log.getvalue().splitlines()
    assert f"identity.rpc.access {LINK} OK " in line
    assert line.endswith("request_id=r-9")
    assert "ms peer=ipv4:127.0.0.1:" in line


def test_json_formatter_keeps_extras_and_exceptions():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("once",), sys.exc_info(),
            extra={"request_id": "r-1"})
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["request_id"], line["level"]) == ("failed once", "r-1", "ERROR")
    assert "ValueError: boom" in line["exception"]


# -- stats ------------------------------------------------------------------


def test_stats_counts_persons_identifiers_links_events_and_storage(client):
    client.link("customer_id:C-1", "email:a@example.com")
    client.link("phone:+447700900123", "email:a@example.com")
    client.link("device_id:d-1")
    client.link("email:b@example.com")
    client.track([event("e-1", "email:a@example.com"), event("e-2", "email:b@example.com")])
    stats = client.stats()
    assert stats.persons == 3
    assert {common_pb2.IdentifierKind.Name(c.kind): c.count for c in stats.identifiers} == {
        "IDENTIFIER_KIND_CUSTOMER_ID": 1, "IDENTIFIER_KIND_EMAIL": 2,
        "IDENTIFIER_KIND_PHONE": 1, "IDENTIFIER_KIND_LOYALTY_CARD": 0,
        "IDENTIFIER_KIND_CRM_ID": 0, "IDENTIFIER_KIND_DEVICE_ID": 1}
    assert (stats.links, stats.events) == (4, 2)
    assert stats.entries["ids"] == 5 and stats.entries["persons"] == 3
    assert stats.lmdb_map_size_bytes == 64 * 1024 * 1024
    assert 0 < stats.lmdb_used_bytes <= stats.lmdb_file_bytes
    assert stats.uptime.ToNanoseconds() > 0 and stats.started_at.seconds > 0


def test_stats_of_an_empty_server_list_every_kind_at_zero(client):
    stats = client.stats()
    assert stats.persons == 0 and stats.links == 0 and stats.events == 0
    assert [c.count for c in stats.identifiers] == [0] * 6


def test_stats_from_the_command_line(server, client, capsys):
    client.link("customer_id:C-1", "email:a@example.com")
    assert main(["stats", "--address", server.address]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["persons"] == "1"  # uint64 prints as a JSON string
    assert printed["entries"]["links"] == "1"
    assert printed["uptime"].endswith("s")


# -- the serve command ----------------------------------------------------------


def test_serve_exposes_metrics_on_a_free_port_and_logs_json(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "identity.cli", "serve", "--data", str(data),
         "--address", "127.0.0.1:0", "--map-size", "64MiB",
         "--metrics-address", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "IDENTITY_API_KEY"})
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("identity serving on"):
                break
        metrics_url = next(line.split()[-1] for line in lines
                           if line.startswith("identity metrics on"))
        address = lines[-1].split()[3]
        key_file = data / "dev-admin.key"
        key = {"api_key": key_file.read_text().strip()} if key_file.exists() else {}
        with IdentityClient(address, **key) as client:  # type: ignore[arg-type]
            client.identity.Link(link_request("email:a@example.com"),
                                 metadata=[("x-request-id", "from-test")])
        samples = scrape_url(metrics_url)
        assert samples("grpc_server_handled_total", grpc_service="identity.v1.IdentityService",
                       grpc_method="Link", grpc_code="OK") == 1
        assert samples("identity_persons") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(logged) == len(err.splitlines())  # every line is JSON
    [link] = [entry for entry in logged if entry.get("method") == LINK]
    assert (link["request_id"], link["code"]) == ("from-test", "OK")


def test_request_ids_from_clients_are_cut_to_128_characters(client):
    _, call = client.identity.Link.with_call(link_request("email:a@example.com"),
                                             metadata=[("x-request-id", "r" * 500)])
    assert trailing(call)["x-request-id"] == "r" * 128
