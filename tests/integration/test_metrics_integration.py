"""The producer's and the gateway's metrics and health ports, on a real stack."""

from __future__ import annotations

import socket

import httpx
import pika
from prometheus_client.parser import text_string_to_metric_families

from consumer_lib.wire.refresh_request import requests_exchange
from tests.waiting import wait_for

from .gateway_stack import RunningGateway, free_port, gateway
from .stack import Stack

__all__ = ["gateway"]


def _metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url, timeout=5).text
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_producer_serves_metrics_and_health(stack: Stack) -> None:
    """A leader is ready, counts its fetches and upstream latency, and holds the lease;
    a standby is ready too (it follows Redis) and is not the leader."""
    leader_port, standby_port = free_port(), free_port()
    stack.producer(WXTOKEN_METRICS_PORT=str(leader_port))
    app_id = stack.app_ids[0]
    wait_for(lambda: stack.snapshot(app_id), timeout_s=30, message="a stored token")
    base = f"http://127.0.0.1:{leader_port}"
    wait_for(
        lambda: _status(base + "/readyz") == 200,
        timeout_s=20,
        message="the leader ready",
    )
    assert httpx.get(base + "/healthz", timeout=2).json() == {"status": "alive"}
    metrics = _metrics(base + "/metrics")
    assert metrics["wxtoken_producer_leader"][0][1] == 1
    assert metrics["wxtoken_producer_lease_epoch"][0][1] >= 1
    assert metrics["wxtoken_producer_lease_acquisitions_total"][0][1] == 1
    published = {labels["result"]: v for labels, v in metrics["wxtoken_producer_publishes_total"]}
    assert published["confirmed"] >= 1
    fetched = {
        (labels["app_id"], labels["kind"]): value
        for labels, value in metrics["wxtoken_producer_fetches_total"]
    }
    assert fetched[(app_id, "access_token")] >= 1
    calls = metrics["wxtoken_producer_upstream_calls_total"]
    assert any(labels["outcome"] == "ok" for labels, _ in calls)
    assert metrics["wxtoken_producer_upstream_seconds_count"]
    left = {labels["app_id"]: v for labels, v in metrics["wxtoken_producer_token_seconds_left"]}
    assert 0 < left[app_id] <= 30
    snapshot = stack.snapshot(app_id)
    assert snapshot is not None
    assert snapshot.value not in httpx.get(base + "/metrics", timeout=5).text
    assert metrics["wxtoken_producer_redis_reachable"][0][1] == 1
    assert metrics["wxtoken_producer_broker_connected"][0][1] == 1
    versions = {labels["app_id"]: v for labels, v in metrics["wxtoken_producer_token_version"]}
    assert versions[app_id] == snapshot.version

    _publish_garbage_request(stack)
    wait_for(
        lambda: _rejected(base, "refresh_request", "invalid") >= 1,
        timeout_s=20,
        message="the garbage request counted as rejected",
    )
    assert _metrics(base + "/metrics")["wxtoken_producer_messages_received_total"][0][1] >= 1

    stack.producer(WXTOKEN_METRICS_PORT=str(standby_port))
    standby = f"http://127.0.0.1:{standby_port}"
    wait_for(
        lambda: _status(standby + "/readyz") == 200,
        timeout_s=20,
        message="the standby ready",
    )
    assert _metrics(standby + "/metrics")["wxtoken_producer_leader"][0][1] == 0


def _publish_garbage_request(stack: Stack) -> None:
    """Not a refresh request: bytes no producer can decode, on its requests exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(stack.service_env["WXTOKEN_AMQP_URL"]))
    try:
        connection.channel().basic_publish(
            exchange=requests_exchange(stack.service_env["WXTOKEN_EXCHANGE"]),
            routing_key="",
            body=b"\x00not json{",
        )
    finally:
        connection.close()


def _rejected(base: str, message: str, reason: str) -> float:
    samples = _metrics(base + "/metrics").get("wxtoken_producer_messages_rejected_total", [])
    return sum(v for labels, v in samples if labels == {"message": message, "reason": reason})


def test_gateway_serves_client_metrics(gateway: RunningGateway) -> None:
    """The gateway's metrics listener (`WXTOKEN_GATEWAY_METRICS_PORT`, not the API's port)
    has every served app's seconds left and version, no token."""
    assert httpx.get(gateway.base_url + "/metrics", timeout=5).status_code == 404
    text = httpx.get(gateway.metrics_url + "/metrics", timeout=5).text
    for app_id in gateway.stack.app_ids:
        assert f'wxtoken_client_token_version{{app_id="{app_id}",kind="access_token"}}' in text
        served = gateway.get(f"/v1/apps/{app_id}/access_token").json()["access_token"]
        assert served not in text
    assert "wxtoken_client_broker_connected 1.0" in text
    gateway.get(f"/v1/apps/{gateway.stack.app_ids[0]}/access_token", role=None)  # a 401
    text = httpx.get(gateway.metrics_url + "/metrics", timeout=5).text
    assert 'wxtoken_gateway_responses_total{status="200"}' in text
    assert 'wxtoken_gateway_responses_total{status="401"} 1.0' in text
    assert "wxtoken_gateway_keys 5.0" in text


def test_producer_with_a_taken_metrics_port_exits_2(stack: Stack) -> None:
    """A metrics port someone else holds stops the producer with one line, exit 2."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        producer = stack.producer(WXTOKEN_METRICS_PORT=str(port))
        assert producer.proc.wait(30) == 2
    err = producer.stderr_text()
    assert f"WXTOKEN_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in err
