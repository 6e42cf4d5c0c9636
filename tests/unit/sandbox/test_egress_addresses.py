"""The address policy's ranges (pure) and its this-host check (a real bind probe)."""

import ipaddress

import pytest

from astraforge.config import Settings
from astraforge.sandbox.egress_addresses import AddressPolicy, range_refusal, service_hosts


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "unique local"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("240.0.0.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("192.88.99.1", "reserved"),
        ("fec0::1", "reserved"),
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1 (loopback)"),
        ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1 (private"),
        ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1"),
        ("::8.8.8.8", "IPv4-compatible form of 8.8.8.8"),
        ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
        ("64:ff9b::a00:1", "NAT64 form of 10.0.0.1"),
        ("64:ff9b:1::1", "local-use NAT64"),
    ],
)
def test_refused_ranges(address: str, why: str) -> None:
    reason = range_refusal(ipaddress.ip_address(address))
    assert reason and why in reason, reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_global_addresses_pass(address: str) -> None:
    assert range_refusal(ipaddress.ip_address(address)) is None


def test_platform_services_and_this_host_are_refused() -> None:
    policy = AddressPolicy({ipaddress.ip_address("8.8.4.4"): "Kafka"})
    assert "platform service (Kafka)" in policy.refusal(ipaddress.ip_address("8.8.4.4"))
    assert "platform service (Kafka)" in policy.refusal(ipaddress.ip_address("::ffff:8.8.4.4"))
    assert policy.refusal(ipaddress.ip_address("8.8.8.8")) is None


def test_service_hosts_come_from_the_settings() -> None:
    s = Settings(
        kafka_bootstrap="k1:9092,[2001:db8::5]:9093",
        database_url="postgresql://u@db.internal:5432/x",
        api_host="0.0.0.0",
        s3_endpoint="http://s3.internal:8333",
        egress_platform_upstreams={"model-gateway": "gw.internal:9000"},
    )
    assert list(service_hosts(s)) == [
        ("Kafka", "k1"),
        ("Kafka", "2001:db8::5"),
        ("PostgreSQL", "db.internal"),
        ("the API", "0.0.0.0"),
        ("S3", "s3.internal"),
        ("platform upstream model-gateway", "gw.internal"),
    ]
