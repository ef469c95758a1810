"""TLS on the main listener (--tls-cert/--tls-key), mTLS (--tls-client-ca), --plain-listen.

Certificates are made in the test with the ``cryptography`` package, or the ``openssl`` CLI;
the tests skip when neither is available.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import warnings
from pathlib import Path

import pytest
from support.inprocess import running
from support.pki import client_ctx, make_pki
from support.requirements import require
from support.servers import ours_process

from beanstalk_py.shell.security import SecurityConfigError, server_ssl_context

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    made = make_pki(tmp_path_factory.mktemp("pki"))
    require(made is not None, "the cryptography package or the openssl CLI (certificates)")
    assert made is not None
    return made


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


def old_tls_client_ctx(ca: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context that offers exactly ``version``, even one the system policy forbids.

    Debian's OpenSSL refuses TLS < 1.2 at security level 2 by default, so a plain context would
    fail on the client side before the server is asked; ``@SECLEVEL=0`` lifts that.
    """
    ctx = client_ctx(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1_1
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def tls_1_1_server_ctx(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def handshake_version(port: int, ctx: ssl.SSLContext) -> str | None:
    """The TLS version the server agreed to, or None if the handshake was refused."""
    try:
        _, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"),
            TIMEOUT,
        )
    except (ssl.SSLError, ConnectionError, OSError):
        return None
    version = w.get_extra_info("ssl_object").version()
    w.close()
    return str(version)


async def test_tls_1_1_is_refused(pki: dict[str, dict[str, Path]]) -> None:
    g = pki["good"]
    try:
        old = old_tls_client_ctx(g["ca"], ssl.TLSVersion.TLSv1_1)
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL cannot offer TLS 1.1 at all ({exc}); see the 1.2/1.3 test")
    # The client really offers TLS 1.1: a server that accepts it completes the handshake.
    # Without this control, a client-side refusal would make the assertion below vacuous.
    control = await asyncio.start_server(
        lambda r, w: w.close(),
        "127.0.0.1",
        0,
        ssl=tls_1_1_server_ctx(g["server_cert"], g["server_key"]),
    )
    try:
        control_port = control.sockets[0].getsockname()[1]
        version = await handshake_version(control_port, old)
        if version is None:
            pytest.skip("this OpenSSL build cannot complete a TLS 1.1 handshake even locally")
        assert version == "TLSv1.1"
    finally:
        control.close()
        await control.wait_closed()
    async with running(tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"])) as srv:
        assert await handshake_version(srv.port, old) is None


async def test_tls_1_2_and_1_3_are_served(pki: dict[str, dict[str, Path]]) -> None:
    g = pki["good"]
    # Debian's OpenSSL policy alone also refuses TLS 1.1 (SECLEVEL=2), which would hide a lowered
    # minimum in the handshake test above; the server must not rely on that policy.
    made = server_ssl_context(str(g["server_cert"]), str(g["server_key"]))
    assert isinstance(made, ssl.SSLContext)
    assert made.minimum_version == ssl.TLSVersion.TLSv1_2
    async with running(tls_cert=str(g["server_cert"]), tls_key=str(g["server_key"])) as srv:
        for version, name in (
            (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
            (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
        ):
            ctx = client_ctx(g["ca"])
            ctx.minimum_version = ctx.maximum_version = version
            assert await handshake_version(srv.port, ctx) == name


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
