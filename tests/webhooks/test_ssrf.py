"""The SSRF guard refuses private, loopback, link-local, CGNAT, metadata and IPv6-equivalent targets after
DNS resolution, and admits what the allow-list lets through."""

from __future__ import annotations

import pytest
from django.test import override_settings

from orchestrator import ssrf
from tests.webhooks.helpers import send_once

BLOCKED = [
    "http://127.0.0.1/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.255/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",  # CGNAT
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://[::ffff:169.254.169.254]/hook",
    "http://[fd00:ec2::254]/hook",  # AWS metadata over IPv6
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "http://localhost:8080/hook",  # a name that resolves to loopback
]


@override_settings(WEBHOOK_ALLOWED_NETWORKS=[])
@pytest.mark.parametrize("url", BLOCKED)
def test_blocked_targets_are_refused(url):
    with pytest.raises(ssrf.TargetRefused):
        ssrf.resolve(url)


@override_settings(WEBHOOK_ALLOWED_NETWORKS=[])
@pytest.mark.parametrize(
    "url",
    ["ftp://93.184.216.34/hook", "http://user:pw@93.184.216.34/hook", "http:///nohost", "http://no-such-host.invalid/"],
)
def test_other_schemes_credentials_and_unresolvable_hosts_are_refused(url):
    with pytest.raises(ssrf.TargetRefused):
        ssrf.resolve(url)


@override_settings(WEBHOOK_ALLOWED_NETWORKS=[])
def test_a_public_address_is_admitted():
    target = ssrf.resolve("https://93.184.216.34:8443/hook")

    assert str(target.ip) == "93.184.216.34"
    assert target.url_for("https://93.184.216.34:8443/hook?a=1") == "https://93.184.216.34:8443/hook?a=1"


@override_settings(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.0/8", "10.9.0.0/16"])
def test_the_allow_list_admits_its_networks_and_nothing_else():
    assert str(ssrf.resolve("http://127.0.0.1:9000/hook").ip) == "127.0.0.1"
    assert str(ssrf.resolve("http://10.9.1.1/hook").ip) == "10.9.1.1"
    with pytest.raises(ssrf.TargetRefused):
        ssrf.resolve("http://10.8.1.1/hook")
    with pytest.raises(ssrf.TargetRefused):
        ssrf.resolve("http://169.254.169.254/")


@override_settings(WEBHOOK_ALLOWED_NETWORKS=[])
def test_the_sender_refuses_before_connecting():
    result = send_once("http://169.254.169.254/latest/meta-data/")

    assert result.outcome == "refused"
    assert result.status_code is None
    assert "SSRF" in result.error
