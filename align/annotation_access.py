"""Who may call the annotation page, and from where (align.annotation_page; docs/annotation.md, "Access").

The page follows what trusted local web tools do (Jupyter's token, TensorBoard's and Gradio's host checks):

- **A token.** `align annotate` makes a random owner token at every start (or takes `--token`, or the
  `ALIGN_ANNOTATE_TOKEN` environment variable) and prints it in the page's link. Every API call must carry a
  token (`Authorization: Bearer ...`; the page sends the one of its link). With `--annotators maria,li` each
  annotator gets a link of their own, whose token is HMAC(owner token, name): the label is tied to the link it
  came from, not to a name in the request, and one annotator can neither label as nor undo another. The owner's
  link then only exports and shows agreement. A given `--token` keeps every link valid across restarts.
- **Host and Origin.** A request whose `Host` is not the bound address (or, bound to every interface, this
  machine's names and address) nor an `--allowed_hosts` name is refused with 403: a page of another site whose
  name is made to resolve to this machine (DNS rebinding) reaches nothing. A request with an `Origin` header
  must come from the page itself (same host and port), so another web page open in the same browser, another
  local port included, cannot call the API.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

TOKEN_ENVIRONMENT_VARIABLE = "ALIGN_ANNOTATE_TOKEN"
TOKEN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.~")
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def check_token(token: str, option: str = "token") -> str:
    """A token given by the user: at least 16 characters that need no escaping in a URL."""
    if len(token) < MIN_TOKEN_CHARS or not set(token) <= TOKEN_CHARS:
        raise ValueError(
            f"{option}: expected at least {MIN_TOKEN_CHARS} letters, digits, '_', '-', '.' or '~' "
            f"(it goes into the page's links), got {len(token)} characters"
        )
    return token


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback interface only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def this_machines_address() -> str | None:
    """The address of the interface that routes outwards (a UDP socket 'connected' sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return None


def hosts_for(bind_host: str, extra: list[str]) -> frozenset[str]:
    """The `Host` names a server bound to `bind_host` answers: the bound address (with the loopback names when it
    is loopback; with this machine's names and address when it is every interface) and `extra`."""
    hosts = {bind_host.lower(), *(name.lower() for name in extra)}
    if is_loopback(bind_host) or bind_host in ANY_ADDRESS:
        hosts.update(LOOPBACK_NAMES)
    if bind_host in ANY_ADDRESS:
        hosts.update({socket.gethostname().lower(), socket.getfqdn().lower()})
        if address := this_machines_address():
            hosts.add(address)
    return frozenset(hosts - {""})


def split_netloc(netloc: str) -> tuple[str, int | None]:
    """(host, port) of a `Host` header or URL netloc, the host lower case without brackets: '[::1]:8765' ->
    ('::1', 8765); a port that is not a number reads as none."""
    parts = urlsplit(f"//{netloc.strip()}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port


def host_of(netloc: str) -> str:
    """The host name of a `Host` header or URL netloc (`split_netloc`)."""
    return split_netloc(netloc)[0]


def link_host(bind_host: str) -> str:
    """The host to print in the links: the bound address, or this machine's address or name when it is every
    interface (an IPv6 address in brackets)."""
    host = (this_machines_address() or socket.gethostname()) if bind_host in ANY_ADDRESS else bind_host
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the owner (`annotator` None) or an annotator whose name their link fixes."""

    annotator: str | None


@dataclass(frozen=True)
class PageAccess:
    """The page's tokens and allowed hosts; see the module docstring. `annotators` empty: names are typed on the
    page and the owner's link labels under them (one person, or people who trust each other)."""

    token: str
    annotators: tuple[str, ...] = ()
    allowed_hosts: frozenset[str] = frozenset(LOOPBACK_NAMES)

    @classmethod
    def create(
        cls, token: str | None, annotators: tuple[str, ...], bind_host: str, allowed_hosts: list[str]
    ) -> PageAccess:
        """The access of a page bound to `bind_host`: the given token, else $ALIGN_ANNOTATE_TOKEN, else a new
        random one."""
        environment = os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
        if token is None and environment:
            token = check_token(environment, TOKEN_ENVIRONMENT_VARIABLE)
        return cls(token or secrets.token_urlsafe(32), annotators, hosts_for(bind_host, allowed_hosts))

    def annotator_token(self, name: str) -> str:
        """The token of `name`'s link: HMAC-SHA256(owner token, name), URL-safe."""
        digest = hmac.new(self.token.encode(), f"annotator:{name}".encode(), hashlib.sha256).digest()
        return digest[:24].hex()

    def caller(self, token: str | None) -> Caller | None:
        """Who holds `token`, or None when it is no token of this page (compared in constant time)."""
        if not token:
            return None
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return Caller(None)
        for name in self.annotators:
            if hmac.compare_digest(token.encode(), self.annotator_token(name).encode()):
                return Caller(name)
        return None

    def links(self, base_url: str) -> list[tuple[str, str]]:
        """(who, link) for the owner and each annotator, `base_url` like 'http://127.0.0.1:8765/'."""
        owner = "owner (export, agreement)" if self.annotators else "annotators (each types a name)"
        return [(owner, f"{base_url}?token={self.token}")] + [
            (name, f"{base_url}?token={self.annotator_token(name)}") for name in self.annotators
        ]

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether the `Host` header names this page ('*' in the allowed hosts: any)."""
        return "*" in self.allowed_hosts or (host_header is not None and host_of(host_header) in self.allowed_hosts)

    @staticmethod
    def origin_allowed(origin: str | None, host_header: str | None) -> bool:
        """Whether a request's `Origin` is the page's own (no header: not a cross-site browser request)."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or host_header is None:
            return False  # 'null' (a sandboxed frame, a file:// page) and anything else is not the page
        default_port = {"http": 80, "https": 443}[parts.scheme]
        host, port = split_netloc(host_header)
        origin_host, origin_port = split_netloc(parts.netloc)
        return (origin_host, origin_port or default_port) == (host, port or default_port)
