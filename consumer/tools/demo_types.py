"""The demo's events of all ten attribute types: a retailer's and a telco's traffic, and their topics.

Each type has its own topic (`TYPE_TOPICS`, given to the daemon through the type's topic setting
from the schema, `consumer.values.attributes`). The mix (`MIX`) is what a shop with a service desk
sends: many viewed products, carts, leads and service activities, fewer searches, errors,
purchases, marketing sources, customer and personal info. Enumerations come by name as often as
by value, as producers send them. Personal and customer data is obviously fake: example.com
addresses, 555-01xx phone numbers, "Example" surnames, `CUST-` ids.

Every event carries a unique mark in one of its fields (`UID_PATHS`), so what the stand-in API
accepted can be matched with what was produced, and a duplicate seen.
"""

from __future__ import annotations

import random
from typing import Any

from consumer.tools.produce import sample_event
from consumer.values.attributes import ATTRIBUTES, CHANNEL_NAMES, GENDERS, PHONE_TYPES

TYPE_TOPICS: dict[str, str] = {
    "lead": "demo.leads",
    "service": "demo.services",
    "error": "demo.errors",
    "searchInfo": "demo.searches",
    "cart": "demo.carts",
    "purchase": "demo.purchases",
    "prodView": "demo.prodviews",
    "ctmrinfo": "demo.customers",
    "mrktInfo": "demo.marketing",
    "personal": "demo.personal",
}
TOPIC_TYPES = {topic: kind for kind, topic in TYPE_TOPICS.items()}
MIX: dict[str, float] = {
    "prodView": 0.20,
    "cart": 0.14,
    "lead": 0.14,
    "service": 0.14,
    "searchInfo": 0.10,
    "purchase": 0.06,
    "error": 0.06,
    "mrktInfo": 0.06,
    "ctmrinfo": 0.05,
    "personal": 0.05,
}
# Where each type's unique mark is, in the type's fields (dotted; digits index arrays).
UID_PATHS: dict[str, str] = {
    "lead": "leadId",
    "service": "serviceId",
    "error": "code",
    "searchInfo": "keywords.1",
    "cart": "products.0.product.sku",
    "purchase": "orderId",
    "prodView": "products.0.product.sku",
    "ctmrinfo": "customerId",
    "mrktInfo": "campaignId",
    "personal": "contacts.0.email",
}

CATALOG = (
    ("wireless earbuds", "audio", "AUD-100", 59.99),
    ("usb-c charger", "accessories", "ACC-210", 19.5),
    ('27" 4k monitor', "displays", "DSP-270", 329.0),
    ("mechanical keyboard", "peripherals", "PER-330", 89.9),
    ("laptop sleeve", "accessories", "ACC-140", 24.0),
    ("smart watch", "wearables", "WEA-500", 199.0),
    ("prepaid sim, 30 days", "plans", "PLN-030", 15.0),
    ("fibre 500 upgrade", "plans", "PLN-500", 45.0),
)
SEARCHES = ("reset password", "roaming charges", "return policy", "track order", "upgrade plan", "esim")
ERRORS = (
    ("checkout", "card declined", 20),
    ("credit card application", "expiration date missing", 10),
    ("login", "too many attempts", 30),
    ("plan change", "address not found", 10),
)
CURRENCIES = ("USD", "EUR", "GBP")
FIRST_NAMES = ("Jane", "John", "Alex", "Sam", "Maria", "Kim")
LAST_NAMES = ("Example", "Sample", "Testperson", "Placeholder")


def demo_event(
    kind: str, i: int, rng: random.Random, visit: tuple[str, str, str]
) -> tuple[str, dict[str, Any]]:
    """(type, event) `i` for one visit (account, visitor, sid): routing fields plus its own, flat.

    A lead or a service is `produce --sample`'s own."""
    account, visitor, sid = visit
    if kind in ("lead", "service"):
        return sample_event(i, rng, account, visitor, sid, kind)
    return kind, {"account": account, "visitor": visitor, "sid": sid, **_GENERATORS[kind](i, rng)}


def event_uid(kind: str, fields: dict[str, Any]) -> str | None:
    """The unique mark of an event: `fields` is a flat event, or the nested object of an attribute."""
    node: Any = fields
    for key in UID_PATHS[kind].split("."):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
    return node if isinstance(node, str) else None


def attribute_uid(attribute: dict[str, Any]) -> tuple[str, str | None]:
    """(type, unique mark) of an attribute as the API received it."""
    kind = str(attribute.get("type"))
    schema = ATTRIBUTES.get(kind)
    if schema is None:
        return kind, None
    fields = attribute.get(schema.nest, {}) if schema.nest else attribute
    return kind, event_uid(kind, fields) if isinstance(fields, dict) else None


def _products(i: int, rng: random.Random, *, quantities: bool = True) -> list[dict[str, Any]]:
    """1-3 products of the catalog; the first one's SKU carries the event's mark."""
    out = []
    for n, (name, category, sku, price) in enumerate(rng.sample(CATALOG, rng.randint(1, 3))):
        product = {
            "name": name,
            "category": category,
            "sku": f"{sku}-e{i}" if n == 0 else sku,
            "price": price,
        }
        if quantities:
            out.append({"product": product, "quantity": rng.randint(1, 3)})
        else:
            stock = rng.randint(0, 40)
            product |= {"statusInStock": "low" if stock < 5 else "in stock", "quantityInStock": stock}
            out.append({"product": product})
    return out


def _total(products: list[dict[str, Any]]) -> tuple[float, int]:
    """(total value, number of items) of products with quantities."""
    total = sum(p["product"]["price"] * p["quantity"] for p in products)
    return round(float(total), 2), sum(p["quantity"] for p in products)


def _cart(i: int, rng: random.Random) -> dict[str, Any]:
    products = _products(i, rng)
    total, items = _total(products)
    return {"total": total, "currency": rng.choice(CURRENCIES), "numItems": items, "products": products}


def _purchase(i: int, rng: random.Random) -> dict[str, Any]:
    products = _products(i, rng)
    total, items = _total(products)
    order = {"total": total, "currency": rng.choice(CURRENCIES), "orderId": f"ORD-{i:06d}"}
    return order | {"cart": {"products": products, "numItems": items}}


def _prod_view(i: int, rng: random.Random) -> dict[str, Any]:
    return {"currency": rng.choice(CURRENCIES), "products": _products(i, rng, quantities=False)}


def _search(i: int, rng: random.Random) -> dict[str, Any]:
    return {"keywords": [rng.choice(SEARCHES), f"order {i:06d}"]}


def _error(i: int, rng: random.Random) -> dict[str, Any]:
    context, message, level = rng.choice(ERRORS)
    fields = {"contextId": context, "message": message, "code": f"er{100000 + i}", "level": level}
    return fields | {"resolved": rng.random() < 0.2}


def _marketing(i: int, rng: random.Random) -> dict[str, Any]:
    channel = rng.randrange(len(CHANNEL_NAMES))
    campaign = rng.choice(("spring-sale", "fibre-launch", "newsletter-06"))
    return {
        "channel": channel if rng.random() < 0.5 else CHANNEL_NAMES[channel].lower(),  # by value or name
        "affiliate": rng.choice(("Google", "Bing", "Facebook", "newsletter")),
        "campaignId": f"{campaign}-e{i}",
    }


def _date(rng: random.Random, first_year: int, last_year: int) -> dict[str, int]:
    return {
        "day": rng.randint(1, 28),
        "month": rng.randint(1, 12),
        "year": rng.randint(first_year, last_year),
    }


def _customer(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "ctype": rng.choice(("gold", "silver", "vip", "standard")),
        "cstatus": rng.choice(("active", "migrated", "cancelled")),
        "balance": round(rng.uniform(-500.0, 5000.0), 2),
        "currency": rng.choice(CURRENCIES),
        "customerId": f"CUST-{i:06d}",
        "userName": f"demo_user_{i}",
        "companySize": rng.choice((1, 12, 250, 5000)),
        "accountName": "Example Corp",
        "role": rng.choice(("owner", "buyer", "it admin")),
        "lastPaymentDate": _date(rng, 2023, 2025),
        "registrationDate": _date(rng, 2010, 2022),
        "loginStatus": rng.choice((0, 1)),
        "storeZipCode": "20505",
    }


def _personal(i: int, rng: random.Random) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    born = _date(rng, 1950, 2005)
    phone_type = rng.choice(PHONE_TYPES)
    contact = {
        "email": f"{first}.{last}.{i}@example.com".lower(),
        "phone": f"+1 202-555-{rng.randrange(100, 200):04d}",  # 555-0100..0199: reserved for fiction
        "phoneType": phone_type if rng.random() < 0.5 else phone_type.lower(),  # by value or name
        "address": {"country": "US", "region": rng.choice(("NY", "CA", "TX"))},
    }
    return {
        "firstname": first,
        "lastname": last,
        "age": {"age": 2025 - born["year"], **born},
        "contacts": [contact],
        "gender": rng.choice(GENDERS).lower(),
        "company": "Example Corp",
        "language": rng.choice(("en-US", "en-GB", "fr-CA")),
    }


_GENERATORS = {
    "error": _error,
    "searchInfo": _search,
    "cart": _cart,
    "purchase": _purchase,
    "prodView": _prod_view,
    "ctmrinfo": _customer,
    "mrktInfo": _marketing,
    "personal": _personal,
}
