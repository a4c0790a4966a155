"""Engagement attributes as LivePerson documents them, written out by hand, and wrong ones.

`DOCUMENTED` holds one attribute per type in exactly the shape the API receives (LivePerson's
developer-center examples, "Types of Engagement Attributes"; the personal data is fake:
example.com addresses, 555 numbers). They are literal JSON on purpose, not derived from
`consumer.values.attributes`: the schema is checked against them, not with itself.

`WRONG` holds, per type, attributes the API must refuse, with the path the refusal names.
"""

from __future__ import annotations

import copy
from typing import Any

PRODUCT = {"name": "prod1", "category": "category", "sku": "sku-1", "price": 7.8}

DOCUMENTED: dict[str, dict[str, Any]] = {
    "lead": {
        "type": "lead",
        "lead": {
            "topic": "luxury car test drive 2015",
            "value": 22.22,
            "currency": "USD",
            "leadId": "xyz123",
        },
    },
    "service": {
        "type": "service",
        "service": {"topic": "order checkbook", "status": 0, "category": "finance", "serviceId": "service12"},
    },
    "error": {
        "type": "error",
        "error": {
            "contextId": "Credit card application",
            "message": "Expiration date missing",
            "code": "er100004",
            "level": 10,
            "resolved": False,
        },
    },
    "searchInfo": {"type": "searchInfo", "keywords": ["Reset password"]},
    "cart": {
        "type": "cart",
        "total": 11.7,
        "currency": "USD",
        "numItems": 6,
        "products": [{"product": PRODUCT, "quantity": 1}],
    },
    "purchase": {
        "type": "purchase",
        "total": 11.7,
        "currency": "USD",
        "orderId": "DRV1534XC",
        "cart": {
            "products": [
                {
                    "product": {
                        "name": "antivirus pro plan",
                        "category": "software",
                        "sku": "xyz001",
                        "price": 7.8,
                    },
                    "quantity": 3,
                }
            ],
            "numItems": 3,
        },
    },
    "prodView": {
        "type": "prodView",
        "currency": "USD",
        "products": [
            {
                "product": {
                    "name": "red high heel shoe",
                    "category": "women shoes",
                    "sku": "xyz567",
                    "price": 77.8,
                    "statusInStock": "low",
                    "quantityInStock": 7,
                }
            }
        ],
    },
    "ctmrinfo": {
        "type": "ctmrinfo",
        "info": {
            "cstatus": "cancelled",
            "ctype": "vip",
            "customerId": "CUST-FAKE-138766",
            "balance": -400.99,
            "currency": "USD",
            "socialId": "11256324780",
            "imei": "3543546543545688",
            "userName": "user000",
            "companySize": 500,
            "companyBranch": "East Village",
            "accountName": "bank corp",
            "role": "broker",
            "lastPaymentDate": {"day": 15, "month": 10, "year": 2014},
            "registrationDate": {"day": 23, "month": 5, "year": 2013},
            "loginStatus": 1,
            "storeNumber": "123865",
            "storeZipCode": "20505",
        },
    },
    "mrktInfo": {
        "type": "mrktInfo",
        "info": {"channel": 1, "affiliate": "Yahoo", "campaignId": "US coupon campaign"},
    },
    "personal": {
        "type": "personal",
        "personal": {
            "firstname": "Janet",
            "lastname": "Fakename",
            "age": {"age": 34, "year": 1980, "month": 4, "day": 15},
            "contacts": [
                {
                    "email": "janet.fakename@example.com",
                    "phone": "+1 212-555-0147",
                    "phoneType": "MOBILE",
                    "address": {"country": "Russia", "region": "Moscow"},
                }
            ],
            "gender": "FEMALE",
            "company": "company",
            "language": "en-US",
        },
    },
}


DROP = object()


def _with(attr: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `attr` with the dotted `path` (list indexes as digits) set, or removed for DROP."""
    out = copy.deepcopy(attr)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DROP:
        del node[key]
    else:
        node[key] = value
    return out


D = DOCUMENTED


def _wrong(kind: str, what: str, path: str, value: Any) -> tuple[str, str, dict[str, Any], str]:
    """One entry of WRONG: the documented attribute of `kind` changed at `path` (dotted, digits index)."""
    named = ".".join(f"[{k}]" if k.isdigit() else k for k in path.split(".")).replace(".[", "[")
    return kind, what, _with(D[kind], path, value), named


# (type, what is wrong, the attribute, the path the 400 must name: fields are checked in documented
# order, unknown keys after them)
WRONG: list[tuple[str, str, dict[str, Any], str]] = [
    _wrong("lead", "unknown key", "lead.extra", "x"),
    _wrong("lead", "value as a string", "lead.value", "22.22"),
    _wrong("lead", "no lead object", "lead", DROP),
    _wrong("service", "status not documented", "service.status", 14),
    _wrong("service", "status by name", "service.status", "Complete"),
    _wrong("error", "level as a string", "error.level", "10"),
    _wrong("error", "resolved as a string", "error.resolved", "false"),
    _wrong("searchInfo", "keywords not an array", "keywords", "Reset password"),
    _wrong("searchInfo", "a keyword not a string", "keywords.0", 1),
    _wrong("cart", "total missing", "total", DROP),
    _wrong("cart", "numItems missing", "numItems", DROP),
    _wrong("cart", "numItems not an integer", "numItems", 6.5),
    _wrong("cart", "price as a string", "products.0.product.price", "7.8"),
    (
        "cart",
        "nested the lead way",
        {"type": "cart", "cart": {k: v for k, v in D["cart"].items() if k != "type"}},
        "total",
    ),
    _wrong("purchase", "cart without products", "cart.products", DROP),
    _wrong("purchase", "quantity as a string", "cart.products.0.quantity", "3"),
    _wrong("prodView", "product missing", "products.0.product", DROP),
    _wrong("prodView", "unknown product key", "products.0.product.colour", "red"),
    _wrong("ctmrinfo", "month out of range", "info.lastPaymentDate.month", 13),
    _wrong("ctmrinfo", "companySize as a string", "info.companySize", "500"),
    ("ctmrinfo", "fields flat", {"type": "ctmrinfo", **D["ctmrinfo"]["info"]}, "info"),
    _wrong("mrktInfo", "channel as a string", "info.channel", "1"),
    _wrong("mrktInfo", "channel not documented", "info.channel", 5),
    _wrong("personal", "gender by name in lower case", "personal.gender", "female"),
    _wrong("personal", "phone type not documented", "personal.contacts.0.phoneType", "CELL"),
    _wrong("personal", "contacts not an array", "personal.contacts", {"email": "a@example.com"}),
    _wrong("personal", "age as a string", "personal.age.age", "34"),
]
