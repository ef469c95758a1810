"""Build hook: compile the protocol core with mypyc for regular installs.

* ``pip install .`` (a standard wheel) compiles ``CORE`` with mypyc; if the compiler or mypyc
  is unavailable it warns and installs the pure-Python package instead.
* ``BEANSTALK_PY_REQUIRE_COMPILED=1`` turns that fallback into an error, so a build that must
  ship the compiled core (the container image) fails instead of silently going pure.
* Editable installs (``pip install -e .``) and ``BEANSTALK_PY_PURE=1`` stay pure Python, so a
  source edit is never shadowed by a stale extension module.
* The extension modules mypyc builds in the source tree are removed once the wheel holds them.
"""

from __future__ import annotations

import os
from typing import Any

from hatch_mypyc.plugin import MypycBuildHook

CORE = [
    "beanstalk_py/core/swaplist.py",
    "beanstalk_py/core/job.py",
    "beanstalk_py/core/jobtable.py",
    "beanstalk_py/core/tube.py",
    "beanstalk_py/core/client.py",
    "beanstalk_py/core/timers.py",
    "beanstalk_py/core/engine.py",
    "beanstalk_py/core/restore.py",
    "beanstalk_py/core/ops.py",
    "beanstalk_py/core/stats.py",
    "beanstalk_py/core/clock.py",
    "beanstalk_py/core/host.py",
    "beanstalk_py/core/journal.py",
    "beanstalk_py/binlog/format.py",
    "beanstalk_py/binlog/sync.py",
    "beanstalk_py/binlog/segments.py",
    "beanstalk_py/binlog/compaction.py",
    "beanstalk_py/binlog/writer.py",
    "beanstalk_py/replica/batch.py",  # cluster mode: the leader's recorder, followers' decode
    "beanstalk_py/replica/apply.py",
    "beanstalk_py/protocol/arguments.py",
    "beanstalk_py/protocol/replies.py",
    "beanstalk_py/protocol/framing.py",
    "beanstalk_py/protocol/commands.py",
    "beanstalk_py/protocol/session.py",
    "beanstalk_py/protocol/tracing.py",
    "beanstalk_py/shell/connection.py",
    "beanstalk_py/shell/commit.py",
    "beanstalk_py/shell/server.py",
]


class CompiledCoreHook(MypycBuildHook):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.setdefault("include", CORE)

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        required = os.environ.get("BEANSTALK_PY_REQUIRE_COMPILED") == "1"
        if version == "editable" or os.environ.get("BEANSTALK_PY_PURE") == "1":
            if required:
                raise RuntimeError(
                    "beanstalk-py: BEANSTALK_PY_REQUIRE_COMPILED=1, but this build is pure Python"
                    f" ({version} install or BEANSTALK_PY_PURE=1)"
                )
            self.clean([version])
            return
        try:
            super().initialize(version, build_data)
        except Exception as exc:  # no compiler, no headers, mypyc error: stay pure
            if required:
                raise RuntimeError(
                    f"beanstalk-py: mypyc build failed and BEANSTALK_PY_REQUIRE_COMPILED=1: {exc}"
                ) from exc
            self.app.display_warning(f"beanstalk-py: mypyc build failed, using pure Python: {exc}")
            self.clean([version])

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        self.clean([version])


def get_build_hook() -> type[CompiledCoreHook]:
    return CompiledCoreHook
