"""The secret rule for logs: every record of a ``qfleet`` logger (``qfleet`` and its children)
has its secrets masked before any handler sees it.

Two things are masked in the formatted message: the value of every secret known to this process
(each executor's ``SecretStr`` fields and secret-named keys register theirs through
:func:`remember` when it is built), and ``key=value`` / ``key: value`` pairs whose key names a
credential (:data:`qfleet.config.secrets.SECRET_KEY`) or an ``Authorization: Bearer ...``
header, whatever the value. Records of other libraries pass through untouched.

How: ``import qfleet`` wraps the process's ``LogRecord`` factory once; the wrapper hands
records whose logger name is ``qfleet`` or starts with ``qfleet.`` to :func:`mask_record`
(this module loads with the first such record, so ``import qfleet`` stays light). A filter on
the ``qfleet`` logger would not do: logger filters do not apply to records of child loggers,
and handler filters would need every handler (pytest's, the user's) to carry one.

Example:
    >>> remember("s3cr3t-value")
    >>> mask_text("sent s3cr3t-value with api_key=abc123 and token: 'xyz'")
    "sent ********** with api_key=********** and token: '**********'"
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from pydantic import SecretStr

from qfleet.config.secrets import MASK, SECRET_KEY, scrub, secret_values

#: Shorter values are not masked by value: a one- or two-character "secret" (a test's "s")
#: would mask that letter in every log line; such values are masked by key only.
MIN_SECRET_LENGTH = 4

_KEY_VALUE = re.compile(
    rf"(?P<key>[\w.-]*(?:{SECRET_KEY.pattern})[\w.-]*)"
    r"(?P<sep>['\"]?\s*[=:]\s*['\"]?)"
    r"(?P<value>(?:bearer\s+)?[^\s'\",;&)}\]]+)",
    re.I,
)
_BEARER = re.compile(r"(?P<key>\bbearer\s+)(?P<value>[\w.~+/=-]+)", re.I)

_known: set[str] = set()
_lock = threading.Lock()


def remember(*secrets: object) -> None:
    """Add secrets (strings or ``SecretStr``) to those masked by value in qfleet's logs;
    empty and short ones, and anything else, are skipped."""
    values = [s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets]
    with _lock:
        _known.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)


def remember_in(value: Any) -> None:
    """Remember every secret inside ``value`` (a model, dict or list; see
    :func:`qfleet.config.secrets.secret_values`)."""
    remember(*secret_values(value))


def mask_text(text: str) -> str:
    """``text`` with known secrets, credential ``key=value`` pairs and bearer tokens masked."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # a longer secret may contain a shorter
    text = scrub(text, known)
    text = _KEY_VALUE.sub(rf"\g<key>\g<sep>{MASK}", text)
    return _BEARER.sub(rf"\g<key>{MASK}", text)


def mask_record(record: logging.LogRecord) -> None:
    """Mask the secrets in ``record``'s message (formatted here, so its arguments go too)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when the record is emitted
        return
    record.msg, record.args = mask_text(message), None
