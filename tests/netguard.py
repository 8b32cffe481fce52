"""A socket guard for the test suite: nothing may leave the machine.

``conftest.py`` installs a :class:`NetworkGuard` around every test. It patches the ``socket`` module
so that connecting, resolving or sending to anything but loopback (``127.0.0.0/8``, ``::1``,
``localhost``) raises :class:`NetworkBlockedError`; Unix sockets are always allowed.
``guard.block_all()`` tightens it for a block of code to *no* network traffic at all, loopback
included, and also refuses to send on sockets opened earlier (a pooled keep-alive connection to a
local server would otherwise carry a request without any new ``connect``): that is how tests prove
that an operation makes no HTTP request.

The error is a ``RuntimeError``, not an ``OSError``, on purpose: HTTP clients retry or wrap
``OSError``s as connection failures, whereas this must surface as the bug it is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class NetworkBlockedError(RuntimeError):
    """A test tried to use the network beyond what the guard allows."""


def is_loopback_host(host: Any) -> bool:
    """True for ``localhost``, ``127.0.0.0/8``, ``::1`` and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    host = host.strip().strip("[]").split("%", 1)[0].lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class NetworkGuard:
    """Decides which socket operations are allowed; see the module docstring."""

    def __init__(self) -> None:
        self.allow_loopback = True
        self.blocked: list[str] = []  # every refused operation, for assertions and post-mortems

    def refuse(self, what: str) -> None:
        self.blocked.append(what)
        if self.allow_loopback:
            raise NetworkBlockedError(f"network access blocked in tests: {what}. Only loopback (127.0.0.0/8, ::1, "
                                      f"localhost) and Unix sockets are allowed; tests must not reach the internet.")
        raise NetworkBlockedError(f"network access blocked in tests: {what}. This block of code runs under "
                                  f"NetworkGuard.block_all(): it must make no network request at all, "
                                  f"not even to loopback.")

    def check_address(self, family: int, address: Any, what: str) -> None:
        if family == getattr(socket, "AF_UNIX", object()):
            return
        host, port = (address[0], address[1]) if isinstance(address, tuple) and len(address) >= 2 else (address, "?")
        if not self.allow_loopback or not is_loopback_host(host):
            self.refuse(f"{what} to {host}:{port}")

    def check_host(self, host: Any, port: Any, what: str) -> None:
        if host is None:  # passive lookups (binding a server) name no remote host
            return
        if not self.allow_loopback or not is_loopback_host(host):
            self.refuse(f"{what} of {host!r} (port {port})")

    @contextlib.contextmanager
    def block_all(self) -> Iterator[NetworkGuard]:
        """Refuse every network operation, loopback included, inside the ``with`` block."""
        self.allow_loopback = False
        try:
            yield self
        finally:
            self.allow_loopback = True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch the ``socket`` module; ``monkeypatch`` undoes it after the test."""
        guard = self
        cls = socket.socket
        connect, connect_ex = cls.connect, cls.connect_ex
        send, sendall, sendto = cls.send, cls.sendall, cls.sendto
        getaddrinfo, create_connection = socket.getaddrinfo, socket.create_connection

        def guarded_connect(sock: socket.socket, address: Any) -> None:
            guard.check_address(sock.family, address, "connect")
            return connect(sock, address)

        def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
            guard.check_address(sock.family, address, "connect_ex")
            return connect_ex(sock, address)

        def guarded_send(sock: socket.socket, *args: Any) -> int:
            guard.check_open_socket(sock, "send")
            return send(sock, *args)

        def guarded_sendall(sock: socket.socket, *args: Any) -> None:
            guard.check_open_socket(sock, "sendall")
            return sendall(sock, *args)

        def guarded_sendto(sock: socket.socket, *args: Any) -> int:
            guard.check_address(sock.family, args[-1], "sendto")
            return sendto(sock, *args)

        def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check_host(host, port, "address lookup")
            return getaddrinfo(host, port, *args, **kwargs)

        def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            guard.check_address(socket.AF_INET, address, "create_connection")
            return create_connection(address, *args, **kwargs)

        monkeypatch.setattr(cls, "connect", guarded_connect)
        monkeypatch.setattr(cls, "connect_ex", guarded_connect_ex)
        monkeypatch.setattr(cls, "send", guarded_send)
        monkeypatch.setattr(cls, "sendall", guarded_sendall)
        monkeypatch.setattr(cls, "sendto", guarded_sendto)
        monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", guarded_create_connection)

    def check_open_socket(self, sock: socket.socket, what: str) -> None:
        """Sending on an already connected socket: refused only under :meth:`block_all`."""
        if self.allow_loopback or sock.family == getattr(socket, "AF_UNIX", object()):
            return
        try:
            peer = sock.getpeername()
        except OSError:
            peer = ("unconnected", "?")
        self.check_address(sock.family, peer, f"{what} on an open socket")
