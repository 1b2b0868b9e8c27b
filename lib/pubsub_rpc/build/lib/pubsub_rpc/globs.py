"""Redis glob patterns (PSUBSCRIBE, ACL channel rules) as Python can test them.

A responder must never publish where its own subscriptions listen (that is how a reply
becomes a request again), so it needs Redis's own matching rules, not ``fnmatch``'s:
``*`` and ``?`` match any bytes including ``.`` and ``/``, ``[...]`` is a class with
``^`` (not ``!``) for negation, and ``\\`` escapes the next character.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                if negate:
                    body = body[1:]
                body = "".join("\\" + c if c in "\\]^[" else c for c in body)
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_matches(pattern: str, name: str) -> bool:
    """True when Redis would deliver a message on ``name`` to ``PSUBSCRIBE pattern``."""
    return compile_glob(pattern).fullmatch(name) is not None
