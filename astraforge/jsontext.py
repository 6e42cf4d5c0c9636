"""JSON from outside the platform (a webhook's body, what an agent prints) read as text.

JSON may escape a lone surrogate (``"\\ud800"``): ``json`` takes it, but it is no character and no
UTF-8 holds it, so no record could carry a string that has one (the append fails). ``loads`` refuses
such a document where it is read, with a ``ValueError`` like any other that is not JSON.
"""

import json
import re
from typing import Any

# an escaped surrogate, \uD800..\uDFFF (a pair of them is one character; one alone is not text)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class NotText(ValueError):
    """The JSON escapes a lone surrogate."""


def loads(data: bytes) -> Any:
    """``json.loads``, refusing (``NotText``) a document with a lone surrogate in a key or a string."""
    value = json.loads(data)
    if _SURROGATE_ESCAPE.search(data) and _holds_lone_surrogate(value):
        raise NotText("the JSON escapes a lone surrogate (not Unicode text)")
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    """Iterative: a document may nest as deep as ``json``'s parser goes."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False
