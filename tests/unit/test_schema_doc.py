"""The README's table and examples of the ten attribute types are the schema's (regenerate on change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.tools.schema_doc import BEGIN, END, block, render
from consumer.values.attributes import ATTRIBUTES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_block_is_written_from_the_schema() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "README is stale: python -m consumer.tools.schema_doc README.md"


def test_every_type_and_field_is_in_the_block() -> None:
    generated = block()
    for kind in ATTRIBUTES.values():
        assert f"`{kind.name}`" in generated and f"`{kind.setting}`" in generated
        for field in kind.fields:
            assert f"`{field.name}`" in generated


def test_a_readme_that_disagrees_is_told_apart() -> None:
    text = README.read_text(encoding="utf-8")
    stale = text.replace("`numItems` **required**", "`numItems`", 1)
    assert stale != text and render(stale) != stale
    with pytest.raises(ValueError):
        render(text.replace(BEGIN, "").replace(END, ""))
