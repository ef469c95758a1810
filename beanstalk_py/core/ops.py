"""Command counters: the ``cmd-*`` fields of ``stats`` (and of /metrics), in printed order."""

from __future__ import annotations

from typing import Final

# Indices into Engine.ops: the cmd-* counters in the order `stats` prints them.
OP_NAMES = (
    "put",
    "peek",
    "peek-ready",
    "peek-delayed",
    "peek-buried",
    "reserve",
    "reserve-with-timeout",
    "delete",
    "release",
    "use",
    "watch",
    "ignore",
    "bury",
    "kick",
    "touch",
    "stats",
    "stats-job",
    "stats-tube",
    "list-tubes",
    "list-tube-used",
    "list-tubes-watched",
    "pause-tube",
)
# Final constants, not a tuple unpacked from range(): compiled code reads a Final int as a
# C constant instead of looking the name up in the module's globals on every command.
OP_PUT: Final = 0
OP_PEEK: Final = 1
OP_PEEK_READY: Final = 2
OP_PEEK_DELAYED: Final = 3
OP_PEEK_BURIED: Final = 4
OP_RESERVE: Final = 5
OP_RESERVE_WITH_TIMEOUT: Final = 6
OP_DELETE: Final = 7
OP_RELEASE: Final = 8
OP_USE: Final = 9
OP_WATCH: Final = 10
OP_IGNORE: Final = 11
OP_BURY: Final = 12
OP_KICK: Final = 13
OP_TOUCH: Final = 14
OP_STATS: Final = 15
OP_STATS_JOB: Final = 16
OP_STATS_TUBE: Final = 17
OP_LIST_TUBES: Final = 18
OP_LIST_TUBE_USED: Final = 19
OP_LIST_TUBES_WATCHED: Final = 20
OP_PAUSE_TUBE: Final = 21
