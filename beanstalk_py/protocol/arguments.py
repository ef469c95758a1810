"""Argument syntax of the command lines, with beanstalkd's exact rules (prot.c read_u32,
read_u64, read_tube_name): numbers are runs of digits after any spaces, the next number
needs at least one space, and range checks are the caller's (``U32``/``U64``/``INT_MAX``).
"""

from __future__ import annotations

import re
from typing import Final

LINE_MAX: Final = 224  # beanstalkd LINE_BUF_SIZE: the longest command line, CRLF included
NAME_MAX: Final = 200
U32: Final = 0xFFFFFFFF
U64: Final = 0xFFFFFFFFFFFFFFFF
INT_MAX: Final = 0x7FFFFFFF

ONE: Final = re.compile(rb" *(\d+)")
TWO: Final = re.compile(rb" *(\d+) +(\d+)")
THREE: Final = re.compile(rb" *(\d+) +(\d+) +(\d+)")
FOUR: Final = re.compile(rb" *(\d+) +(\d+) +(\d+) +(\d+)")
# kick's bound is read with strtoul: leading whitespace and a sign are accepted
STRTOUL: Final = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(\d+)")
NAME_RUN: Final = re.compile(rb" *([A-Za-z0-9\-+/;.$_()]*)")
_VALID_NAME: Final = re.compile(rb"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")


def valid_tube_name(name: bytes) -> bool:
    return _VALID_NAME.fullmatch(name) is not None
