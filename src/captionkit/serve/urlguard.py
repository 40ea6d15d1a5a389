"""Fetching image URLs for the server without letting a client reach the server's own network.

A caption request may name an image by URL; the server then makes the request, from inside
whatever network it runs in. Left alone that is a server-side request forgery hole: a URL
naming ``127.0.0.1:6379``, a private address or ``169.254.169.254`` (the cloud metadata
service, which hands out credentials) would be fetched on the client's behalf. So:

* only ``http``/``https`` (the scheme allow-list), no user-info in the URL;
* the host is resolved **once** and every address it resolves to must be public
  (:func:`address_refusal`); the connection then goes to that checked address (the URL's
  host is kept for the ``Host`` header and TLS SNI), so a second DNS answer that points
  elsewhere (DNS rebinding) is never asked for;
* redirects are followed by hand, each hop checked again the same way;
* the body is streamed and cut off at the size limit; a deadline bounds the whole fetch;
* environment proxies are ignored (a proxy would resolve the name itself).

``allow_private`` (``--allow-private-urls``) lifts the address check only, for a server on a
trusted network that captions images from an internal host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from captionkit.errors import InputError

SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Cloud metadata services reachable from inside a VM (AWS/GCP/Azure/OpenStack, Alibaba,
#: AWS's IPv6 one, Oracle). Most are link-local already; listed so the refusal says why.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "192.0.0.192")
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class URLRefused(InputError):
    """A URL the server will not fetch: its scheme, credentials or address (422)."""


class URLTooLarge(InputError):
    """A URL whose body is over the per-image size limit (413)."""


def address_refusal(address: str | IPAddress) -> str | None:
    """Why a client may not make the server connect to ``address`` (None: a public address).

    Refused: cloud metadata addresses, loopback, private (RFC 1918, unique-local ``fc00::/7``,
    carrier-grade NAT ``100.64/10``), link-local, multicast, unspecified, reserved and
    documentation ranges; IPv4 hidden in IPv6 (mapped ``::ffff:a.b.c.d``, 6to4, Teredo,
    NAT64 ``64:ff9b::``) is judged by the IPv4 address inside it.
    """
    try:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or (ip.sixtofour if ip.sixtofour else None)
        if inner is None and ip.teredo:
            inner = ip.teredo[1]
        if inner is None and ip in ipaddress.ip_network("64:ff9b::/96"):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            why = address_refusal(inner)
            return why and f"{why} (inside {ip})"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a shared (carrier NAT) address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    for hit, why in checks:
        if hit:
            return why
    return None


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True)
class URLLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0  # the whole fetch, redirects included
    max_redirects: int = 5
    allow_private: bool = False


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """One checked hop: the URL to connect to (host replaced by the checked address) and the
    original host for ``Host`` and SNI."""

    url: str
    connect_url: str
    host: str
    address: str


async def check_url(url: str, limits: URLLimits, resolve: Resolver = system_resolve) -> Target:
    """Refuse a URL the server must not fetch, or say where to connect (one DNS lookup)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise URLRefused(f"{_short(url)}: only http and https URLs are fetched")
    if parts.username or parts.password:
        raise URLRefused(f"{_short(url)}: URLs with a user name or password are refused")
    host = parts.hostname
    if not host:
        raise URLRefused(f"{_short(url)}: no host in the URL")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise URLRefused(f"{_short(url)}: bad port") from None
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = await resolve(host, port)
    if not addresses:
        raise InputError(f"cannot resolve {host}")
    if not limits.allow_private:
        for address in addresses:
            why = address_refusal(address)
            if why:
                raise URLRefused(
                    f"{_short(url)}: {host} resolves to {address}, {why}; "
                    "the server does not fetch from its own network (--allow-private-urls)"
                )
    address = addresses[0]
    shown = f"[{address}]" if ":" in address else address
    netloc = shown if parts.port is None else f"{shown}:{parts.port}"
    connect = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(url, connect, host if parts.port is None else f"{host}:{parts.port}", address)


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."


async def fetch_image(
    url: str,
    limits: URLLimits,
    *,
    resolve: Resolver = system_resolve,
    transport: object | None = None,
) -> bytes:
    """The body of ``url`` under :class:`URLLimits`; :class:`InputError` (one line) if not.

    ``transport``: an ``httpx.AsyncBaseTransport`` to use instead of the network (tests).
    """
    import anyio
    import httpx

    from captionkit.http import USER_AGENT, over_limit_message

    deadline = time.monotonic() + limits.timeout
    timeout = httpx.Timeout(limits.timeout, connect=min(limits.timeout, 5.0))
    kwargs: dict[str, object] = {"transport": transport} if transport is not None else {}
    async with httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        **kwargs,  # type: ignore[arg-type]
    ) as client:
        current = url
        for _hop in range(limits.max_redirects + 1):
            target = await check_url(current, limits, resolve)
            extensions = {"sni_hostname": urlsplit(current).hostname or ""}
            headers = {"Host": target.host, "User-Agent": USER_AGENT, "Accept": "image/*"}
            try:
                with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    request = client.build_request(
                        "GET", target.connect_url, headers=headers, extensions=extensions
                    )
                    response = await client.send(request, stream=True)
                    try:
                        if response.is_redirect:
                            location = response.headers.get("location", "")
                            current = urljoin(current, location)
                            continue
                        if response.status_code >= 400:
                            raise InputError(f"{_short(url)}: HTTP {response.status_code}")
                        declared = response.headers.get("content-length", "")
                        if declared.isdigit() and int(declared) > limits.max_bytes:
                            raise URLTooLarge(
                                f"{_short(url)}: "
                                f"{over_limit_message(int(declared), limits.max_bytes)}"
                            )
                        chunks, size = [], 0
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            if size > limits.max_bytes:
                                raise URLTooLarge(
                                    f"{_short(url)}: {over_limit_message(None, limits.max_bytes)}"
                                )
                            chunks.append(chunk)
                        return b"".join(chunks)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise InputError(f"{_short(url)}: timed out after {limits.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise InputError(f"{_short(url)}: {type(exc).__name__}: {exc}") from None
        raise InputError(f"{_short(url)}: more than {limits.max_redirects} redirects")
