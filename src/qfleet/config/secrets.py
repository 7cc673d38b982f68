"""The one secret rule, for every output: config show, logs, errors, the CLI, the job store.

A value is secret when it is a pydantic ``SecretStr``, when its field is annotated as one,
or when its key names a credential (:data:`SECRET_KEY`: ``token``, ``access_token``,
``client_secret``, ``password``, ``api_key``, ``credentials``, ``connection_string``, ...),
at any depth (``[executors.ClassiqExecutor.backend_preferences] access_token`` included).
Secrets are shown as :data:`MASK`; a password inside a URL (``https://user:pw@host``) too.
Text that may quote a secret's value (an SDK's error message) goes through :func:`scrub`.

Example:
    >>> redact({"device": "sim", "backend_preferences": {"access_token": "abc", "n": 1}})
    {'device': 'sim', 'backend_preferences': {'access_token': '**********', 'n': 1}}
    >>> scrub("401 for token abc123", ["abc123"])
    '401 for token **********'
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "**********"

#: Keys whose values are credentials, wherever they appear.
SECRET_KEY = re.compile(
    r"token|secret|password|passwd|api_?key|credential|connection_?string|private_?key|"
    r"authorization|cookie",
    re.I,
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(?=@)", re.I)


def is_secret_key(key: object) -> bool:
    """Whether a key (field or table key) names a credential."""
    return bool(SECRET_KEY.search(str(key)))


def is_secret_annotation(annotation: Any) -> bool:
    """Whether a field annotation is (or contains) ``SecretStr``."""
    if annotation is SecretStr:
        return True
    return any(is_secret_annotation(a) for a in typing.get_args(annotation)) or (
        "SecretStr" in str(annotation)
    )


def _models(annotation: Any) -> list[type[BaseModel]]:
    found = [a for a in (annotation, *typing.get_args(annotation))
             if isinstance(a, type) and issubclass(a, BaseModel)]
    return found


def redact(value: Any, annotation: Any = None, key: object = "") -> Any:
    """``value`` as plain data with every secret in it masked (see the module docstring).

    ``annotation`` (a field's type) lets model-typed tables mask their SecretStr fields."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        annotation, value = type(value), dict(value)
    if isinstance(value, dict):  # a table under a secret key (credentials): key by key
        fields: dict[str, Any] = {}
        for model in _models(annotation):
            fields.update({n: f.annotation for n, f in model.model_fields.items()})
        return {k: redact(v, fields.get(str(k)), k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, None, key) for v in value]
    secret = is_secret_key(key) or (annotation is not None and is_secret_annotation(annotation))
    if secret and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}", value)
    return value


def scrub(text: str, secrets: Iterable[str | SecretStr | None] = ()) -> str:
    """``text`` with each secret's value (and URL passwords) replaced by the mask."""
    for secret in secrets:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if raw:
            text = text.replace(raw, MASK)
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)


def secret_values(value: Any, key: object = "") -> list[str]:
    """Every secret string inside ``value`` (for :func:`scrub`)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return secret_values(dict(value), key)
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in secret_values(v, k)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in secret_values(v, key)]
    if isinstance(value, str) and is_secret_key(key):
        return [value]
    return []
