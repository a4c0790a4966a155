"""The stand-in API's strict check of a received attribute: the corners JSON types hide."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from attribute_examples import DOCUMENTED

from consumer.sandbox.shape import attribute_problem


def changed(kind: str, change: dict[str, Any], nest: str | None = None) -> dict[str, Any]:
    """The documented attribute of `kind` with some keys (of its nested object) replaced."""
    attr = copy.deepcopy(DOCUMENTED[kind])
    (attr[nest] if nest else attr).update(change)
    return attr


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_each_documented_attribute_has_no_problem(kind: str) -> None:
    assert attribute_problem(DOCUMENTED[kind]) == ""


@pytest.mark.parametrize(
    ("attribute", "problem"),
    [
        (
            changed("mrktInfo", {"channel": True}, "info"),
            "info.channel: expected one of 0, 1, 2, 3, 4, got boolean",
        ),
        (changed("cart", {"total": True}), "total: expected a number, got boolean"),
        (changed("cart", {"total": float("nan")}), "total: expected a number, got number"),
        (changed("cart", {"currency": None}), "currency: expected a string, got null"),
        (changed("cart", {"currency": ""}), "currency: 0 characters, expected 1..16"),
        (changed("lead", {"topic": "x" * 4097}, "lead"), "lead.topic: 4097 characters, expected 0..4096"),
        (changed("searchInfo", {"keywords": ["k"] * 101}), "keywords: 101 items, expected 0..100"),
        (
            changed("ctmrinfo", {"loginStatus": 2**31}, "info"),
            "info.loginStatus: outside -2147483648..2147483647",
        ),
        (changed("error", {"level": 10.0}, "error"), "error.level: expected an integer, got number"),
        ({"type": "lead", "lead": {}, "service": {}}, "service: not a field of lead"),
        ({"type": "cart", "total": 1, "numItems": 1, "type2": 1}, "type2: not a documented field"),
        ("lead", "expected an object, got string"),
    ],
)
def test_the_first_problem_is_named_by_its_path_without_the_value(attribute: object, problem: str) -> None:
    assert attribute_problem(attribute) == problem


def test_personal_values_are_never_echoed() -> None:
    wrong = changed("personal", {"gender": "Janet Fakename", "firstname": "Janet"}, "personal")
    problem = attribute_problem(wrong)
    assert problem.startswith("personal.gender: ") and "Janet" not in problem
