"""A throwaway CA and certificates made with ``openssl``, for TLS tests (no network, no CA)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The CA certificate (PEM) clients trust."""
    cert: Path
    key: Path
    """A leaf certificate for 127.0.0.1 and localhost, signed by the CA, and its key (PEM)."""

    def pkcs12(self, password: str) -> Path:
        """The leaf and its key as a PKCS#12 keystore (what a Java broker loads)."""
        path = self.cert.with_suffix(".p12")
        _openssl(
            "pkcs12", "-export", "-in", str(self.cert), "-inkey", str(self.key),
            "-out", str(path), "-passout", f"pass:{password}", "-name", "broker",
        )  # fmt: skip
        return path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is needed for the TLS tests (apt-get install openssl)")
    subprocess.run([binary, *args], check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path, name: str = "server") -> Certificates:
    """A CA and one leaf certificate (subjectAltName 127.0.0.1, localhost) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.crt"
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=labelloop test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={name}",
    )  # fmt: skip
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)
