"""Importing a real beanstalkd binlog (v7, made by /usr/bin/beanstalkd) and a synthetic v5 one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from support.binlog_helpers import open_binlog
from support.requirements import require

from beanstalk_py.binlog.beanstalkd_import import import_beanstalkd
from beanstalk_py.core.job import BURIED, DELAYED, READY

BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"


@pytest.fixture(autouse=True)
def _need_beanstalkd() -> None:
    require(os.path.exists(BEANSTALKD), f"{BEANSTALKD}: the reference server (Debian: beanstalkd)")


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, text: str, body: bytes | None = None) -> bytes:
        data = text.encode() + b"\r\n"
        if body is not None:
            data += body + b"\r\n"
        self.sock.sendall(data)
        return self.line()

    def put(self, pri: int, ttr: int, body: bytes, delay: int = 0) -> int:
        reply = self.cmd(f"put {pri} {delay} {ttr} {len(body)}", body)
        assert reply.startswith(b"INSERTED "), reply
        return int(reply.split()[1])

    def reserve(self) -> int:
        reply = self.cmd("reserve-with-timeout 2")
        assert reply.startswith(b"RESERVED "), reply
        n = int(reply.split()[2])
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        self.buf = self.buf[n + 2 :]
        return int(reply.split()[1])

    def stats_job(self, job_id: int) -> dict[str, str]:
        reply = self.cmd(f"stats-job {job_id}")
        assert reply.startswith(b"OK "), reply
        n = int(reply.split()[1])
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        text, self.buf = self.buf[:n].decode(), self.buf[n + 2 :]
        out = {}
        for row in text.splitlines()[1:]:
            k, _, v = row.partition(": ")
            out[k] = v.strip('"')
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_import_real_beanstalkd_v7(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    port = free_port()
    proc = subprocess.Popen([BEANSTALKD, "-b", str(src), "-l", "127.0.0.1", "-p", str(port)])
    try:
        for _ in range(100):
            try:
                c = Client(port)
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("beanstalkd did not start")
        big = (b"0123456789" * 6554)[:65535]  # beanstalkd itself loses this one on restart
        assert c.put(5, 30, b"one") == 1
        assert c.put(0, 60, b"two") == 2
        assert c.reserve() == 2
        assert c.cmd("bury 2 7") == b"BURIED"
        assert c.put(0, 60, b"three") == 3
        assert c.reserve() == 3
        assert c.cmd("release 3 9 100") == b"RELEASED"
        assert c.put(0, 60, b"four") == 4
        assert c.cmd("delete 4") == b"DELETED"
        assert c.cmd("use other") == b"USING other"
        assert c.put(1, 60, b"five") == 5
        w = Client(port)
        assert w.cmd("watch other") == b"WATCHING 2"
        assert w.cmd("ignore default") == b"WATCHING 1"
        assert w.reserve() == 5  # still reserved at kill time
        assert c.cmd("use big") == b"USING big"
        assert c.put(2, 60, big) == 6
        assert c.cmd("use default") == b"USING default"
        assert c.put(0, 60, b"seven") == 7
        assert c.reserve() == 7
        assert c.cmd("bury 7 3") == b"BURIED"
        assert c.put(0, 60, b"eight") == 8
        assert c.reserve() == 8
        assert c.cmd("bury 8 4") == b"BURIED"
        assert c.cmd("kick-job 8") == b"KICKED"
        stats = {i: c.stats_job(i) for i in (1, 2, 3, 5, 6, 7, 8)}
        now = time.time()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert (src / "binlog.1").read_bytes()[:4] == struct.pack("<i", 7)

    dst = tmp_path / "dst"
    report = import_beanstalkd(src, dst, file_size=1 << 20, max_job_size=65535)
    assert (report.jobs, report.ready, report.delayed, report.buried) == (7, 4, 1, 2)
    assert report.next_id == 9 and report.warnings == []
    bl, res = open_binlog(dst, file_size=1 << 20)
    got = {j.id: j for j in res.jobs}
    assert sorted(got) == [1, 2, 3, 5, 6, 7, 8]
    assert res.next_id == 9
    assert [j.id for j in res.jobs if j.state == BURIED] == [2, 7]
    bodies = {1: b"one", 2: b"two", 3: b"three", 5: b"five", 6: big, 7: b"seven", 8: b"eight"}
    expect_state = {1: READY, 2: BURIED, 3: DELAYED, 5: READY, 6: READY, 7: BURIED, 8: READY}
    for i, st in stats.items():
        j = got[i]
        assert j.body == bodies[i] + b"\r\n"
        assert j.tube == st["tube"]
        assert j.state == expect_state[i]
        assert (j.pri, j.ttr, j.delay) == (int(st["pri"]), int(st["ttr"]), int(st["delay"]))
        for k in ("buries", "kicks", "releases", "timeouts"):
            assert getattr(j, k) == int(st[k]), (i, k)
        # reserves only as of the job's last record (5 was reserved after its put record)
        assert j.reserves == (0 if i == 5 else int(st["reserves"]))
        assert abs(j.created - (now - int(st["age"]))) < 2.0
    assert abs(got[3].deadline_wall - (now + int(stats[3]["time-left"]))) < 2.0
    assert got[5].tube == "other" and got[6].tube == "big"
    bl.close()


def test_import_refuses_nonempty_destination(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "binlog.1").write_bytes(struct.pack("<i", 7))
    dst = tmp_path / "dst"
    bl, _ = open_binlog(dst)
    from support.binlog_helpers import make_job

    assert bl.put(make_job(1))
    bl.close()
    with pytest.raises(Exception, match="already holds"):
        import_beanstalkd(src, dst, file_size=1 << 20, max_job_size=65535)


def _v5_record(job_id: int, tube: bytes, body: bytes, state: int, pri: int) -> bytes:
    rec = struct.pack(
        "<QI4xQQi4xQQIIIIIB",
        job_id,
        pri,
        0,
        120_000_000,  # ttr 120 s in microseconds
        len(body) if tube else 0,
        1_600_000_000_000_000,  # created, microseconds since epoch
        0,
        1,
        0,
        0,
        0,
        0,
        state,
    )
    return struct.pack("<q", len(tube)) + tube + rec + body


def test_import_v5(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = struct.pack("<i", 5)
    data += _v5_record(1, b"legacy", b"hi\r\n", 1, 3)
    data += _v5_record(2, b"legacy", b"yo\r\n", 2, 4)  # reserved -> ready
    data += _v5_record(3, b"legacy", b"gone\r\n", 1, 4)
    data += _v5_record(3, b"", b"", 0, 4)  # SHORT delete
    data += _v5_record(9, b"", b"", 3, 4)  # SHORT for an unknown id: ignored
    data += bytes(200)  # zero padding ends the file
    (src / "binlog.3").write_bytes(data)
    dst = tmp_path / "dst"
    report = import_beanstalkd(src, dst, file_size=1 << 20, max_job_size=100)
    assert report.jobs == 2 and report.next_id == 10
    bl, res = open_binlog(dst)
    assert [(j.id, j.tube, j.pri, j.ttr, j.state, j.body) for j in res.jobs] == [
        (1, "legacy", 3, 120, READY, b"hi\r\n"),
        (2, "legacy", 4, 120, READY, b"yo\r\n"),
    ]
    assert res.jobs[0].created == pytest.approx(1_600_000_000.0)
    assert res.jobs[0].reserves == 1
    assert res.next_id == 10
    bl.close()
