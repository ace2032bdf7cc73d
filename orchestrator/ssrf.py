"""The SSRF guard: what the service fetches from a URL a tenant gave (a webhook endpoint, a JWT issuer's
JWKS) may only reach public addresses, checked after DNS resolution, on every connection (so a name that
later resolves to a private address is refused then: DNS rebinding).

Blocked: private, loopback, link-local (incl. cloud metadata 169.254.169.254), CGNAT, multicast, reserved,
documentation and benchmarking ranges, and their IPv6 equivalents (IPv4-mapped addresses are checked as
the IPv4 they carry). ``WEBHOOK_ALLOWED_NETWORKS`` lets chosen CIDRs through (loopback in the embedded
default, where the customer backend runs on the same machine).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import httpcore
import orjson
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BLOCKED_NETWORKS = [
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b::/96",  # NAT64 can reach any IPv4 address
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",  # 6to4 embeds IPv4 addresses
        "fc00::/7",  # unique local (incl. fd00:ec2::254, AWS metadata over IPv6)
        "fe80::/10",
        "ff00::/8",
    )
]


class TargetRefused(Exception):
    """The URL may not be called."""


class HostUnresolvable(TargetRefused):
    """The name does not resolve (yet): nothing to connect to, and nothing vetted either."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    ip: IPAddress

    def url_for(self, url: str) -> str:
        """The URL with its host replaced by the vetted IP, so the connection goes exactly there."""
        parts = urlsplit(url)
        ip = f"[{self.ip}]" if self.ip.version == 6 else str(self.ip)
        netloc = f"{ip}:{self.port}"
        return parts._replace(netloc=netloc).geturl()


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.WEBHOOK_ALLOWED_NETWORKS]


def is_blocked(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in _allowed_networks()):
        return False
    return any(ip in network for network in BLOCKED_NETWORKS if network.version == ip.version)


def _split(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("only http and https URLs with a host are allowed")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("invalid port") from exc
    return parts.scheme, parts.hostname, port


def _vetted(host: str, infos: list) -> IPAddress:
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    blocked = [str(ip) for ip in addresses if is_blocked(ip)]
    if blocked:
        # One blocked answer refuses the name: the client must not get to pick among them.
        raise TargetRefused(f"{host} resolves to a blocked address ({blocked[0]})")
    return addresses[0]


def resolve(url: str) -> Target:
    """Resolve ``url``'s host and vet every address it resolves to; return the one to connect to."""
    scheme, host, port = _split(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolvable(f"{host} does not resolve") from exc
    return Target(scheme=scheme, host=host, port=port, ip=_vetted(host, infos))


def check(url: str) -> None:
    """Refuse a URL that no attempt could be made to, before any lookup: another scheme, credentials."""
    _split(url)


async def vet(host: str, port: int) -> IPAddress:
    """:func:`resolve` for a connection about to be opened from an event loop: the address to connect to."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolvable(f"{host} does not resolve") from exc
    return _vetted(host, infos)


class _VettingBackend(httpcore.NetworkBackend):
    """httpcore's synchronous network backend, but a TCP connection is opened only to a vetted address."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        target = resolve(f"http://{host}:{port}/")
        return self._inner.connect_tcp(
            str(target.ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise TargetRefused("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class FetchFailed(Exception):
    """The URL answered with something else than a small JSON document, or not at all."""


def get_json(url: str, *, timeout: float = 5.0, max_bytes: int = 256 * 1024):
    """GET a small JSON document from a URL a tenant gave: the connection vetted after DNS, TLS verified for
    the URL's host, no redirects followed, at most ``max_bytes`` read. Raises :class:`TargetRefused` or
    :class:`FetchFailed`."""
    check(url)
    context = ssl.create_default_context(cafile=settings.WEBHOOK_CA_BUNDLE or certifi.where())
    extensions = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}
    with httpcore.ConnectionPool(ssl_context=context, network_backend=_VettingBackend(), retries=0) as pool:
        try:
            with pool.stream("GET", url, headers={"Accept": "application/json"}, extensions=extensions) as response:
                if response.status != 200:
                    raise FetchFailed(f"{url} answered {response.status}")
                body = b""
                for chunk in response.iter_stream():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchFailed(f"{url} answered more than {max_bytes} bytes")
        except httpcore.ConnectError as exc:
            if isinstance(exc.__context__, TargetRefused):
                raise exc.__context__ from None
            raise FetchFailed(f"{url}: {exc.__class__.__name__}") from exc
        except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as exc:
            raise FetchFailed(f"{url}: {exc.__class__.__name__}") from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FetchFailed(f"{url} did not answer JSON") from exc
