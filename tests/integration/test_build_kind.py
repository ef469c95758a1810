"""The build under test is the one that runs, in-process and as a started server.

``.ci/test-compiled`` installs the mypyc-compiled package, names it in
``BEANSTALK_PY_TEST_PYTHONPATH`` and sets ``BEANSTALK_PY_EXPECT_COMPILED=1``; the default run
tests the pure-Python working tree. Without these checks a compiled run whose server processes
quietly import the source tree would look exactly like a passing compiled run.
"""

from __future__ import annotations

import importlib.machinery
import os
import socket
from pathlib import Path

from support.servers import ServerProcess, ours_argv, ours_env, package_root

import beanstalk_py
import beanstalk_py.core.engine
from beanstalk_py.shell.build_info import core_kind

EXPECT_COMPILED = os.environ.get("BEANSTALK_PY_EXPECT_COMPILED") == "1"
EXPECTED_KIND = "mypyc" if EXPECT_COMPILED else "pure"
PACKAGE_DIR = Path(package_root()).resolve() / "beanstalk_py"


def test_in_process_core_is_the_build_under_test() -> None:
    assert core_kind() == EXPECTED_KIND
    engine_file = beanstalk_py.core.engine.__file__
    assert engine_file is not None
    if EXPECT_COMPILED:
        assert engine_file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), engine_file
    else:
        assert engine_file.endswith(".py"), engine_file
    assert Path(beanstalk_py.__file__).resolve().parent == PACKAGE_DIR


def test_started_server_process_runs_the_build_under_test() -> None:
    """Read the shared objects a real ``python -m beanstalk_py`` has mapped (/proc/PID/maps).

    mypyc puts the code of every compiled module in one ``<hash>__mypyc`` library next to the
    package; a module imported by the package itself (the server) also maps its own stub.
    """
    with ServerProcess(ours_argv(), env=ours_env()) as srv:
        # The listening socket may be bound before the core is imported: ask a command first.
        with socket.create_connection((srv.host, srv.port), timeout=10) as conn:
            conn.sendall(b"use kind\r\n")
            assert conn.recv(100) == b"USING kind\r\n"
        maps = Path(f"/proc/{srv.pid}/maps").read_text()
        cwd = Path(os.readlink(f"/proc/{srv.pid}/cwd")).resolve()
    mapped = {Path(line.split()[-1]) for line in maps.splitlines() if line.endswith(".so")}
    mypyc_libs = {p for p in mapped if "__mypyc." in p.name}
    ours = {p for p in mapped if PACKAGE_DIR in p.resolve().parents}
    if EXPECT_COMPILED:
        assert [p.resolve().parent for p in mypyc_libs] == [PACKAGE_DIR.parent], mypyc_libs
        assert any(
            p.name.startswith("server.") and p.resolve().parent == PACKAGE_DIR / "shell"
            for p in ours
        ), sorted(ours)
    else:
        assert mypyc_libs == set() and ours == set(), sorted(mypyc_libs | ours)
    # `python -m` puts the cwd first on sys.path: it must not hold another beanstalk_py.
    assert not (cwd / "beanstalk_py").exists() or cwd / "beanstalk_py" == PACKAGE_DIR
