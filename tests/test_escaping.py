"""Escaping per output format, against references: a literal port of the GitHub Actions toolkit's
escapeData/escapeProperty, and XML 1.0 well-formedness as judged by an XML parser."""
from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from robusteval.escaping import markdown_cell, markdown_code, visible, workflow_data, workflow_property, xml_text


def _toolkit_escape_data(s: str) -> str:  # @actions/core src/command.ts, escapeData
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _toolkit_escape_property(s: str) -> str:  # @actions/core src/command.ts, escapeProperty
    return _toolkit_escape_data(s).replace(":", "%3A").replace(",", "%2C")


def _random_text(rng: random.Random) -> str:
    alphabet = "ab:,%|`\r\n\t \x00\x07\x1b\x7f\x85\u2028\ud800\ufffe<>&\"'é€"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))


def test_workflow_escaping_matches_the_actions_toolkit_on_printable_text():
    rng = random.Random(0)
    for _ in range(500):
        text = "".join(rng.choice("ab:,% \r\n::error") for _ in range(rng.randint(0, 30)))
        assert workflow_data(text) == _toolkit_escape_data(text)
        assert workflow_property(text) == _toolkit_escape_property(text)


def test_workflow_data_is_one_line_without_control_characters():
    out = workflow_data("a\nb\r\x1b[2Jc\x00")
    assert out == "a%0Ab%0D\\x1b[2Jc\\x00"


def test_visible_is_one_printable_line():
    assert visible("a\nb\x1b\x7f\u2028") == "a\\x0ab\\x1b\\x7f\\u2028"
    assert visible("plain text, ünïcode €") == "plain text, ünïcode €"


def test_xml_text_is_always_well_formed_and_keeps_printable_text():
    rng = random.Random(1)
    for _ in range(300):
        text = _random_text(rng)
        root = ET.Element("t", name=xml_text(text))
        root.text = xml_text(text)
        parsed = ET.fromstring(ET.tostring(root, encoding="unicode").encode("utf-8"))  # ill-formed XML raises
        assert parsed.get("name") == xml_text(text)
        assert (parsed.text or "") == xml_text(text).replace("\r\n", "\n").replace("\r", "\n")  # XML end-of-line
    assert xml_text("ok\tline\n") == "ok\tline\n" and xml_text("\x00\x1b") == "\\u0000\\u001b"


def test_markdown_cells_and_code_spans_stay_in_their_cell():
    assert markdown_cell("a|b\nc") == "a\\|b\\x0ac"
    assert markdown_code("plain") == "`plain`"
    assert markdown_code("a`b") == "`` a`b ``"
    assert markdown_code("`x`") == "`` `x` ``"
