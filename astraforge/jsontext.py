"""JSON from outside the platform (a webhook's body, what an agent prints, a model's tool arguments)
read as text.

JSON may escape a lone surrogate (``"\\ud800"``): ``json`` takes it, but it is no character and no
UTF-8 holds it, so no record could carry a string that has one (the append failed: a webhook answered
500, a run or a conversation failed for good). Real senders do write them: Python's ``json.dumps``
escapes the surrogates ``surrogateescape`` makes of a file name that is not UTF-8, in an exception
message an error tracker forwards. ``loads`` reads such a string as a UTF-8 decoder reads bytes
that are not text with ``errors="replace"``: each lone surrogate becomes U+FFFD.
"""

import json
import re
from typing import Any

# an escaped surrogate, \uD800..\uDFFF (a pair of them is one character; one alone is not text)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str json made: a pair is one character there


def loads(data: bytes | str) -> Any:
    """``json.loads``, with every lone surrogate of a key or a string replaced by U+FFFD."""
    value = json.loads(data)
    if _SURROGATE_ESCAPE.search(data if isinstance(data, bytes) else data.encode()) and _holds_lone_surrogate(value):
        value = json.loads(_LONE_SURROGATE.sub("\ufffd", json.dumps(value, ensure_ascii=False)))
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    """Iterative: a document may nest as deep as ``json``'s parser goes."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _LONE_SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False
