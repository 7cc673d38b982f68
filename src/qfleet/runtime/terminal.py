"""Text from user data made safe to print: control characters shown, never obeyed.

A job name, program, error message or config value can hold escape sequences (``ESC]0;...BEL``
retitles the terminal, ``ESC[2J`` clears it), bidirectional overrides that reorder what is
shown, or lone surrogates that cannot be encoded. :func:`printable` writes each of them
visibly as its Python escape (``\\x1b``, ``\\u202e``, ``\\udc80``); :func:`markup_safe`
additionally escapes rich markup (``[red]``), for text handed to rich as markup (table
cells, ``console.print``).

Example:
    >>> printable("job\\x1b]0;owned\\x07")
    'job\\\\x1b]0;owned\\\\x07'
    >>> markup_safe("[bold]x[/bold]")
    '\\\\[bold]x\\\\[/bold]'
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls, DEL, and the format characters that reorder or hide text.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
_KEEP_MULTILINE = {"\n", "\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: object, *, multiline: bool = False) -> str:
    """``str(text)`` with every control/format character written as a visible escape
    (newlines and tabs kept where ``multiline``)."""
    value = text if isinstance(text, str) else str(text)

    def replace(match: re.Match[str]) -> str:
        char = match.group()
        if multiline and char in _KEEP_MULTILINE:
            return char
        return _escape(char)

    value = _UNSAFE.sub(replace, value)
    # Other unassigned/private/format characters outside the ranges above.
    if any(unicodedata.category(c) in ("Cf", "Co", "Cn", "Cs") for c in value):
        value = "".join(
            _escape(c) if unicodedata.category(c) in ("Cf", "Co", "Cn", "Cs") else c for c in value
        )
    return value


def markup_safe(text: object, *, multiline: bool = False) -> str:
    """:func:`printable`, with rich markup escaped too (for rich tables and ``print``)."""
    from rich.markup import escape

    return escape(printable(text, multiline=multiline))
