"""The serving tests cannot reach the network, so a hidden download fails loudly."""

from __future__ import annotations

import socket

import pytest


def test_outbound_connections_are_refused() -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="outbound"):
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routable anyway


def test_loopback_stays_open() -> None:
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
