"""TLS on the main listener (--tls-cert/--tls-key), mTLS (--tls-client-ca), --plain-listen.

Certificates are made in the test with the ``cryptography`` package, or the ``openssl`` CLI;
the tests skip when neither is available.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.inprocess import running
from support.requirements import require_binary
from support.servers import ours_process

from beanstalk_py.security import SecurityConfigError, server_ssl_context

TIMEOUT = 5.0


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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    d = tmp_path_factory.mktemp("pki")
    try:
        import cryptography  # noqa: F401

        make = _make_ca_and_cert_cryptography
    except ImportError:
        require_binary("openssl", "certificates for the TLS tests (Debian: openssl)")
        make = _make_ca_and_cert_openssl
    return {"good": make(d, "good"), "other": make(d, "other")}


def client_ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


async def tls_ask(port: int, ctx: ssl.SSLContext, data: bytes) -> bytes:
    r, w = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), TIMEOUT
    )
    try:
        w.write(data)
        return await asyncio.wait_for(r.readline(), TIMEOUT)
    finally:
        w.close()


async def test_tls_serves_the_protocol(pki: dict[str, dict[str, Path]]) -> None:
    g = pki["good"]
    async with running(tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"])) as srv:
        ctx = client_ctx(g["ca"])
        assert await tls_ask(srv.port, ctx, b"put 0 0 60 2\r\nhi\r\n") == b"INSERTED 1\r\n"
        r, w = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost"
        )
        assert w.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        w.write(b"reserve\r\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"RESERVED 1 2\r\n"
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"hi\r\n"
        # a big pipelined burst through TLS (back-pressure + TLS write buffers)
        w.write(b"list-tube-used\r\n" * 5000)
        for _ in range(5000):
            assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"USING default\r\n"
        w.close()


async def test_plaintext_client_on_tls_port_is_dropped(pki: dict[str, dict[str, Path]]) -> None:
    g = pki["good"]
    async with running(tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"])) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"stats\r\n" + b"\x00" * 600)
        try:
            data = await asyncio.wait_for(r.read(), TIMEOUT)
        except (ConnectionError, OSError):
            data = b""
        assert b"OK" not in data
        w.close()
        await asyncio.sleep(0.05)
        assert not srv.conns


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_1_1_is_refused(pki: dict[str, dict[str, Path]]) -> None:
    g = pki["good"]
    async with running(tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"])) as srv:
        ctx = client_ctx(g["ca"])
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            pytest.skip("this OpenSSL cannot even offer TLS 1.1")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await tls_ask(srv.port, ctx, b"stats\r\n")


async def test_plain_listen_next_to_tls(pki: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    g = pki["good"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        plain_port = s.getsockname()[1]
    async with running(
        tls_cert=str(g["server_cert"]),
        tls_key=str(g["server_key"]),
        plain_listen=f"127.0.0.1:{plain_port}",
    ) as srv:
        assert await tls_ask(srv.port, client_ctx(g["ca"]), b"use t\r\n") == b"USING t\r\n"
        r, w = await asyncio.open_connection("127.0.0.1", plain_port)
        w.write(b"use u\r\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"USING u\r\n"
        w.close()


async def test_mtls(pki: dict[str, dict[str, Path]]) -> None:
    g, o = pki["good"], pki["other"]
    async with running(
        tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"]), tls_client_ca=str(g["ca"])
    ) as srv:
        good = client_ctx(g["ca"], g["client_cert"], g["client_key"])
        assert await tls_ask(srv.port, good, b"list-tube-used\r\n") == b"USING default\r\n"
        # no client certificate
        for ctx in (client_ctx(g["ca"]), client_ctx(g["ca"], o["client_cert"], o["client_key"])):
            try:
                reply = await tls_ask(srv.port, ctx, b"list-tube-used\r\n")
            except (ssl.SSLError, ConnectionError, OSError):
                reply = b""
            assert reply == b""
        # a client that does not trust the server's CA
        with pytest.raises(ssl.SSLError):
            await tls_ask(
                srv.port, client_ctx(o["ca"], g["client_cert"], g["client_key"]), b"stats\r\n"
            )
        assert await tls_ask(srv.port, good, b"list-tube-used\r\n") == b"USING default\r\n"


async def test_max_connections_with_tls(pki: dict[str, dict[str, Path]]) -> None:
    g = pki["good"]
    async with running(
        tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"]), max_connections=3
    ) as srv:
        ctx = client_ctx(g["ca"])
        kept = [
            await asyncio.open_connection(
                "127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost"
            )
            for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        r, w = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost"
        )
        try:
            data = await asyncio.wait_for(r.read(), TIMEOUT)
        except (ConnectionError, OSError, ssl.SSLError):
            data = b""
        assert data == b""
        assert srv.rejected_connections == 1
        for _, kw in [*kept, (r, w)]:
            kw.close()


def test_bad_files_give_one_line_errors(pki: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    g = pki["good"]
    with pytest.raises(SecurityConfigError, match="no such file"):
        server_ssl_context(str(tmp_path / "nope.pem"), str(g["server_key"]))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SecurityConfigError, match="cannot load"):
        server_ssl_context(str(junk), str(g["server_key"]))
    with pytest.raises(SecurityConfigError, match="cannot load"):
        server_ssl_context(str(g["server_cert"]), str(pki["other"]["server_key"]))
    with pytest.raises(SecurityConfigError, match="--tls-client-ca"):
        server_ssl_context(str(g["server_cert"]), str(g["server_key"]), str(junk))
    proc = subprocess.run(
        [
            __import__("sys").executable,
            "-m",
            "beanstalk_py",
            "--tls-cert",
            str(junk),
            "--tls-key",
            str(g["server_key"]),
        ],
        capture_output=True,
        timeout=30,
        **ours_process(),
    )
    assert proc.returncode == 5
    assert b"cannot load certificate" in proc.stderr
    assert b"Traceback" not in proc.stderr
