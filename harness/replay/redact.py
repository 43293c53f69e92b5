"""Stripping credentials from imported logs before anything is written.

Agent frameworks save their model configuration beside the messages, and that
configuration can hold the provider key (the reference's ``model_kwargs`` does when a
key was passed explicitly); a model can also echo a key it was shown. Every imported
record goes through :func:`redact` first: an object key that names a credential is
removed with its value, and a string that looks like a credential is replaced in place.
The caller gets the JSON paths of what was removed, never the values, so an import
report can say what happened without repeating the secret.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

# Object keys whose value is a credential. "token" counts only as a whole word
# (token, hf_token, auth-token), so usage counters such as prompt_tokens survive.
_CREDENTIAL_KEY = re.compile(
    r"(api[_-]?key|apikey|secret|passw(or)?d|authori[sz]ation|credential|private[_-]?key|cookie"
    r"|(^|[_-])token$|^bearer$)",
    re.IGNORECASE,
)

# Values shaped like credentials, wherever they occur in a string.
_CREDENTIAL_VALUE = re.compile(
    r"(\bsk-[A-Za-z0-9_\-]{8,}"  # OpenAI / Anthropic style secret keys
    r"|\bBearer\s+[A-Za-z0-9._~+/\-]{8,}=*"  # HTTP bearer tokens
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bhf_[A-Za-z0-9]{20,}"  # Hugging Face tokens
    r"|\bAIza[0-9A-Za-z_\-]{30,})"  # Google API keys
)


def is_credential_key(key: str) -> bool:
    return bool(_CREDENTIAL_KEY.search(key))


def redact(data: Any, path: str = "$") -> tuple[Any, list[str]]:
    """A copy of ``data`` without credentials, and the paths where something was removed."""
    removed: list[str] = []
    return _walk(data, path, removed), removed


def _walk(data: Any, path: str, removed: list[str]) -> Any:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            where = f"{path}.{key}"
            if isinstance(key, str) and is_credential_key(key) and value not in (None, "", {}, []):
                removed.append(where)
                continue
            out[key] = _walk(value, where, removed)
        return out
    if isinstance(data, list):
        return [_walk(value, f"{path}[{i}]", removed) for i, value in enumerate(data)]
    if isinstance(data, str):
        cleaned, count = _CREDENTIAL_VALUE.subn(REDACTED, data)
        if count:
            removed.append(path)
        return cleaned
    return data
