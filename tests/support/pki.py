"""Test certificates: a CA with a server and a client certificate, made on the fly.

Made with the ``cryptography`` package, or the ``openssl`` CLI when it is missing; ``make_pki``
returns None when neither is available so the caller can skip with a reason.
"""

from __future__ import annotations

import datetime
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any


def _make_ca_and_cert_cryptography(d: Path, name: str) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": d / f"{name}-ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for leaf in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-{leaf}")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        out[f"{leaf}_cert"] = d / f"{name}-{leaf}.pem"
        out[f"{leaf}_key"] = d / f"{name}-{leaf}.key"
        out[f"{leaf}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{leaf}_key"].write_bytes(key_pem(key))
    return out


def _make_ca_and_cert_openssl(d: Path, name: str) -> dict[str, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=60)

    out = {"ca": d / f"{name}-ca.pem"}
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name} CA",
        "-keyout",
        f"{name}-ca.key",
        "-out",
        out["ca"].name,
    )
    ext = d / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for leaf in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}-{leaf}",
            "-keyout",
            f"{name}-{leaf}.key",
            "-out",
            f"{name}-{leaf}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}-{leaf}.csr",
            "-CA",
            out["ca"].name,
            "-CAkey",
            f"{name}-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.name,
            "-out",
            f"{name}-{leaf}.pem",
        )
        out[f"{leaf}_cert"] = d / f"{name}-{leaf}.pem"
        out[f"{leaf}_key"] = d / f"{name}-{leaf}.key"
    return out


def make_pki(d: Path) -> dict[str, dict[str, Path]] | None:
    """Two independent CAs ("good", "other"), each with a server and a client certificate."""
    try:
        import cryptography  # noqa: F401

        make = _make_ca_and_cert_cryptography
    except ImportError:
        if shutil.which("openssl") is None:
            return None
        make = _make_ca_and_cert_openssl
    return {"good": make(d, "good"), "other": make(d, "other")}


def client_ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
