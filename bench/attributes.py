"""The `attributes` figures: parse and encode cost per attribute type; the schema walker against libraries.

    python -m bench.attributes   # a few seconds; splices its section into bench/RESULTS.md

Parse is `parse_event` (orjson, the routing fields, the schema walker, the Event) on each type's
schema example as a flat message; encode is `encode_attributes` of the attribute it becomes (one
attribute: a request of a visit with one event). The comparison validates the same lead and a cart
of three products with the hand walker and with the libraries one could use instead, each given
the decoded dict (what `EventReader.read` holds before validating) and the raw bytes. msgspec and
fastjsonschema are not dependencies: install them beside (`pip install --target DIR`, PYTHONPATH)
to have their rows; each library does less than the walker (no unknown-field count, no enum names,
no path-naming refusals with our kinds), so its figure is a lower bound of what it would cost here.
"""

import contextlib
import os
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.formats import splice
from consumer.formats.events import build_event, encode_attributes, parse_event
from consumer.values.attributes import ATTRIBUTES

BEGIN, END = "<!-- attributes:begin -->", "<!-- attributes:end -->"
ROUTING = {"account": "1234", "visitor": "xyz", "sid": "rty.uio"}
PRODUCT = {"product": {"name": "prod1", "category": "category", "sku": "sku", "price": 7.8}, "quantity": 1}
LEAD = orjson.dumps({**ROUTING, **ATTRIBUTES["lead"].example})
CART = orjson.dumps({**ROUTING, "total": 11.7, "currency": "USD", "numItems": 3, "products": [PRODUCT] * 3})


def best_us(fn: Callable[[], object], number: int = 20_000, repeat: int = 7) -> float:
    """Microseconds per call, the best of `repeat` rounds of `number` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def per_type() -> list[tuple[str, float, float, int, int]]:
    """(type, parse us, encode us, message bytes, attribute bytes) for each type's example."""
    cases = {}
    for name, kind in ATTRIBUTES.items():
        message = orjson.dumps({**ROUTING, **kind.example})
        cases[name] = (message, parse_event(message, name).attribute)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(3):  # interleaved rounds: the machine's load drifts; keep each one's best
        for name, (message, attribute) in cases.items():
            parse = best_us(lambda m=message, n=name: parse_event(m, n), 10_000, 3)
            encode = best_us(lambda a=attribute: encode_attributes([a]), 10_000, 3)
            old = best.get(name, (parse, encode))
            best[name] = (min(parse, old[0]), min(encode, old[1]))
    return [
        (name, *best[name], len(message), len(encode_attributes([attribute])))
        for name, (message, attribute) in cases.items()
    ]


def _pydantic() -> dict[str, Callable[[], object]]:
    from typing import Annotated

    import pydantic

    text = Annotated[str, pydantic.StringConstraints(max_length=4096)]
    route = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=1024)]
    strict = pydantic.ConfigDict(strict=True, extra="ignore")

    class Lead(pydantic.BaseModel):
        model_config = strict
        account: route
        visitor: route
        sid: route
        topic: text | None = None
        value: float | None = None
        currency: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=16)] | None = None
        leadId: text | None = None

    class Product(pydantic.BaseModel):
        model_config = strict
        name: text | None = None
        category: text | None = None
        sku: text | None = None
        price: float | None = None

    class Item(pydantic.BaseModel):
        model_config = strict
        product: Product
        quantity: int | None = None

    class Cart(pydantic.BaseModel):
        model_config = strict
        account: route
        visitor: route
        sid: route
        total: float
        numItems: int
        currency: str | None = None
        products: Annotated[list[Item], pydantic.Field(max_length=256)] | None = None

    lead, cart = orjson.loads(LEAD), orjson.loads(CART)
    return {
        "lead dict": lambda: Lead.model_validate(lead),
        "lead bytes": lambda: Lead.model_validate_json(LEAD),
        "cart3 dict": lambda: Cart.model_validate(cart),
        "cart3 bytes": lambda: Cart.model_validate_json(CART),
    }


def _json_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    s = {"type": "string", "maxLength": 4096}
    r = {"type": "string", "minLength": 1, "maxLength": 1024}
    routing = {"account": r, "visitor": r, "sid": r}
    lead = {
        "type": "object",
        "required": ["account", "visitor", "sid"],
        "properties": {**routing, "topic": s, "value": {"type": "number"}, "leadId": s}
        | {"currency": {"type": "string", "minLength": 1, "maxLength": 16}},
    }
    product = {
        "type": "object",
        "properties": {"name": s, "category": s, "sku": s, "price": {"type": "number"}},
    }
    item = {
        "type": "object",
        "required": ["product"],
        "properties": {"product": product, "quantity": {"type": "integer"}},
    }
    cart = {
        "type": "object",
        "required": ["account", "visitor", "sid", "total", "numItems"],
        "properties": {**routing, "total": {"type": "number"}, "numItems": {"type": "integer"}, "currency": s}
        | {"products": {"type": "array", "maxItems": 256, "items": item}},
    }
    return lead, cart


def _optional_libraries() -> dict[str, dict[str, Callable[[], object]]]:
    out: dict[str, dict[str, Callable[[], object]]] = {}
    lead_schema, cart_schema = _json_schemas()
    lead, cart = orjson.loads(LEAD), orjson.loads(CART)
    import jsonschema

    jl, jc = jsonschema.Draft202012Validator(lead_schema), jsonschema.Draft202012Validator(cart_schema)
    out["jsonschema"] = {"lead dict": lambda: jl.validate(lead), "cart3 dict": lambda: jc.validate(cart)}
    try:
        import fastjsonschema

        fl, fc = fastjsonschema.compile(lead_schema), fastjsonschema.compile(cart_schema)
        out["fastjsonschema"] = {
            "lead dict": lambda: fl(lead),
            "lead bytes": lambda: fl(orjson.loads(LEAD)),
            "cart3 dict": lambda: fc(cart),
            "cart3 bytes": lambda: fc(orjson.loads(CART)),
        }
    except ImportError:
        pass
    with contextlib.suppress(ImportError):
        out["msgspec"] = _msgspec()
        out["msgspec + the rest of build_event's job"] = {"lead dict": _msgspec_whole_job()}
    return out


def _msgspec_whole_job() -> Callable[[], object]:
    """What build_event does for a lead, with msgspec validating the fields: routing, body, unknown keys."""
    from typing import Annotated

    import msgspec

    from consumer.values.event import Event, Visit

    class Lead(msgspec.Struct, omit_defaults=True):
        topic: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
        value: int | float | None = None  # float alone would send 200 as 200.0
        currency: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] | None = None
        leadId: Annotated[str, msgspec.Meta(max_length=4096)] | None = None

    known = {"account", "visitor", "sid", *ATTRIBUTES["lead"].field_names}
    obj = orjson.loads(LEAD)

    def build() -> Event:
        account, visitor, sid = obj["account"], obj["visitor"], obj["sid"]
        body = msgspec.to_builtins(msgspec.convert(obj, Lead))
        unknown = tuple(k for k in obj if k not in known)
        return Event(Visit(account, visitor, sid), "lead", {"type": "lead", "lead": body}, unknown)

    assert build() == build_event(obj, "lead")
    return build


def _msgspec() -> dict[str, Callable[[], object]]:
    from typing import Annotated

    import msgspec

    text = Annotated[str, msgspec.Meta(max_length=4096)]

    class Lead(msgspec.Struct):
        account: str
        visitor: str
        sid: str
        topic: text | None = None
        value: float | None = None
        currency: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] | None = None
        leadId: text | None = None

    class Product(msgspec.Struct, omit_defaults=True):
        name: text | None = None
        category: text | None = None
        sku: text | None = None
        price: float | None = None

    class Item(msgspec.Struct, omit_defaults=True):
        product: Product
        quantity: int | None = None

    class Cart(msgspec.Struct):
        account: str
        visitor: str
        sid: str
        total: float
        numItems: int
        currency: str | None = None
        products: Annotated[list[Item], msgspec.Meta(max_length=256)] | None = None

    lead, cart = orjson.loads(LEAD), orjson.loads(CART)
    ld, cd = msgspec.json.Decoder(Lead), msgspec.json.Decoder(Cart)
    return {
        "lead dict": lambda: msgspec.to_builtins(msgspec.convert(lead, Lead)),
        "lead bytes": lambda: ld.decode(LEAD),
        "cart3 dict": lambda: msgspec.to_builtins(msgspec.convert(cart, Cart)),
        "cart3 bytes": lambda: cd.decode(CART),
    }


def comparison() -> dict[str, dict[str, float]]:
    """us per validation of each contender, per case (lead / cart3, from the dict / from the bytes)."""
    lead, cart = orjson.loads(LEAD), orjson.loads(CART)
    contenders: dict[str, dict[str, Callable[[], object]]] = {
        "schema walker (ours)": {
            "lead dict": lambda: build_event(lead, "lead"),
            "lead bytes": lambda: parse_event(LEAD, "lead"),
            "cart3 dict": lambda: build_event(cart, "cart"),
            "cart3 bytes": lambda: parse_event(CART, "cart"),
        },
        "pydantic (strict)": _pydantic(),
        **_optional_libraries(),
    }
    best: dict[str, dict[str, float]] = {name: {} for name in contenders}
    for _ in range(3):  # interleaved rounds: the machine's load drifts; keep each one's best
        for name, cases in contenders.items():
            for case, fn in cases.items():
                got = best_us(fn, 5_000, 3)
                best[name][case] = min(got, best[name].get(case, got))
    return best


def section(
    rows: list[tuple[str, float, float, int, int]], compared: dict[str, dict[str, float]]
) -> list[str]:
    """The markdown section of RESULTS.md."""
    load = os.getloadavg()[0]
    lines = [
        BEGIN,
        "## Attribute types: parse and encode cost (`python -m bench.attributes`)",
        "",
        "In this process, best of 3 interleaved rounds (1-minute load at the end: " + f"{load:.2f}).",
        "Parse: `parse_event` of each type's schema example as a flat message; encode: `encode_attributes`",
        "of the attribute it becomes.",
        "",
        "| type | parse (us) | encode (us) | message bytes | attribute bytes |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{n}` | {p:.2f} | {e:.2f} | {mb} | {ab} |" for n, p, e, mb, ab in rows]
    cases = ("lead dict", "lead bytes", "cart3 dict", "cart3 bytes")
    lines += [
        "",
        "Validation against libraries (us per call, best of 3 interleaved rounds; `dict`: the decoded",
        "object, `bytes`: from the raw message; each library alone does less than the walker: see the",
        "module docstring; the last row does what `build_event` does with msgspec checking the fields).",
        "",
        "| validator | " + " | ".join(cases) + " |",
        "|---|" + "---|" * len(cases),
    ]
    for name, got in compared.items():
        lines.append(f"| {name} | " + " | ".join(f"{got[c]:.2f}" if c in got else "-" for c in cases) + " |")
    return [*lines, "", END, ""]


def main() -> None:
    """Measure, print and splice the section into bench/RESULTS.md."""
    lines = section(per_type(), comparison())
    print("\n".join(lines))
    splice(Path(__file__).with_name("RESULTS.md"), lines, BEGIN, END)


if __name__ == "__main__":
    main()
