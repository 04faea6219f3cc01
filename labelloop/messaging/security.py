"""How every labelloop Kafka client authenticates and encrypts, from the settings, in one place.

FastStream's broker takes a security object, aiokafka's producers, consumers and admin clients
take keyword arguments. Both come from :func:`broker_security`: the keyword arguments are
FastStream's own translation of that object, so the broker and the raw clients (lag, topics,
replay, probes, readiness) can never connect differently.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from labelloop.config import Settings

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


class KafkaSecurityError(ValueError):
    """A certificate or key the settings name cannot be read."""


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for SSL and SASL_SSL: the brokers' certificates are checked against
    ``kafka_ssl_cafile`` (the system's CAs when empty), host names included; a client
    certificate is offered when one is given."""
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise KafkaSecurityError(f"LABELLOOP_{name.upper()}={path}: no such file")
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )
    return context


def broker_security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for ``kafka_security_protocol`` (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    sasl = _SASL[settings.kafka_sasl_mechanism]
    return sasl(
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )


def kafka_security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments (``security_protocol``, ``ssl_context``, ``sasl_*``); empty
    for PLAINTEXT, so aiokafka's defaults apply."""
    return parse_security(broker_security(settings))


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Where and how any aiokafka client connects: ``bootstrap_servers`` plus security."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **kafka_security_options(settings),
    }
