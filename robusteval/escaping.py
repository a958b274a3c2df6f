"""Escaping of user-controlled text (model ids from file names, metric keys, paths) per output format.

Every writer of a CI-facing output routes names through one of these: a name may contain
newlines or control characters, and CI systems act on what they read (GitHub Actions runs any
output line that starts with ``::`` as a workflow command). HTML uses :func:`html.escape`.
"""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def visible(text: object) -> str:
    """One printable line: control characters (newlines included) become ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", str(text))


def xml_text(text: object) -> str:
    """Text XML 1.0 can carry: characters it forbids (most C0 controls, lone surrogates,
    U+FFFE/U+FFFF) become visible ``\\uNNNN`` escapes; ElementTree escapes the rest."""
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def markdown_cell(text: object) -> str:
    """A GitHub-flavoured Markdown table cell: one line, pipes escaped."""
    return visible(text).replace("|", "\\|")


def markdown_code(text: object) -> str:
    """Inline code that survives backticks in ``text`` (a longer fence, padded with spaces)."""
    text = visible(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def workflow_data(text: object) -> str:
    """The message of a GitHub workflow command, escaped as the Actions toolkit's ``escapeData``
    (other control characters, which the log would render, become visible escapes)."""
    return visible(str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def workflow_property(text: object) -> str:
    """A workflow-command property value, escaped as the toolkit's ``escapeProperty``."""
    return workflow_data(text).replace(":", "%3A").replace(",", "%2C")
