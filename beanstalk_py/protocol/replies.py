"""Reply lines that carry no value, spelled exactly as on the wire."""

from __future__ import annotations

from typing import Final

BAD_FORMAT: Final = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND: Final = b"UNKNOWN_COMMAND\r\n"
NOT_FOUND: Final = b"NOT_FOUND\r\n"
INTERNAL_ERROR: Final = b"INTERNAL_ERROR\r\n"
UNAUTHORIZED: Final = b"UNAUTHORIZED\r\n"
AUTHENTICATED: Final = b"AUTHENTICATED\r\n"
