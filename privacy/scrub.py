"""Masking sensitive strings in free text that a policy keeps.

A field annotated ``Scrub()`` crosses the boundary, but e-mail addresses, phone numbers,
card numbers (those passing the Luhn check), IP addresses and secrets or tokens found in it
are replaced by a tag such as ``[email]``. Rows are pre-filtered with one vectorised Arrow
regex, so text without any candidate costs no Python; what was found is counted by kind.

Scanning is a safety net, not a guarantee: names, addresses and anything the patterns do not
know pass through. Text that must not leave, whatever it holds, is ``Redact()``-ed.

Examples:
    >>> import pyarrow as pa
    >>> text, found = scrub(pa.array(["mail me: a.b@example.com", "nothing here", None]))
    >>> text.to_pylist(), dict(found)
    (['mail me: [email]', 'nothing here', None], {'email': 1})
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("secret", "email", "ip", "card", "phone")

_TOKENS = (
    r"AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"  # JWT
    r"|(?:sk|pk|rk|ghp|gho|ghs|glpat|xox[abpr])[-_][A-Za-z0-9_-]{16,}"  # vendor API keys
    r"|(?i:bearer|token|api[_-]?key|secret|password)\s*[:=]?\s*[A-Za-z0-9._~+/=-]{12,}"
    r"|(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{32,}={0,2}"  # long key
)
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_IP = r"(?<![\w:.])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:.])"
_CARD = r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"
_PHONE = r"(?<![\w+])\+?\(?\d[\d ().-]{7,}\d(?!\w)"

# The vectorised pre-filter (RE2, so no look-arounds): a superset of what the patterns
# above can match. A row it does not match is left as is without touching Python.
_ANY = (
    r"(?i)@|\d{3}|\d[\d.]{6}|::|[0-9a-f]{1,4}:[0-9a-f]{0,4}:|akia|eyj|bearer|token"
    r"|api[_-]?key|secret|password|[a-z0-9+/_-]{16,}"
)


def luhn(digits: str) -> bool:
    """The Luhn checksum that card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_card(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 13 <= len(digits) <= 19 and luhn(digits)


def _is_phone(text: str) -> bool:
    return 9 <= sum(ch.isdigit() for ch in text) <= 15


_PASSES: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    ("secret", re.compile(_TOKENS), None),
    ("email", re.compile(_EMAIL), None),
    ("ip", re.compile(_IP), _is_ip),
    ("card", re.compile(_CARD), _is_card),
    ("phone", re.compile(_PHONE), _is_phone),
]


def scrub_text(text: str, found: Counter[str]) -> str:
    """``text`` with every sensitive string replaced by its tag; counts into ``found``."""
    for kind, pattern, valid in _PASSES:

        def mask(
            m: re.Match[str], kind: str = kind, valid: Callable[[str], bool] | None = valid
        ) -> str:
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            found[kind] += 1
            return f"[{kind}]"

        text = pattern.sub(mask, text)
    return text


def scrub(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Counter[str]]:
    """A string column with sensitive strings masked, and how many of each kind were found."""
    found: Counter[str] = Counter()
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    candidates = pc.fill_null(pc.match_substring_regex(column, _ANY), False)
    rows = np.flatnonzero(candidates.to_numpy(zero_copy_only=False))
    if len(rows) == 0:
        return column, found
    values = column.to_pylist()
    for i in rows.tolist():
        values[i] = scrub_text(values[i], found)
    return pa.array(values, pa.string()), found
