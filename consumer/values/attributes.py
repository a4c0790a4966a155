"""The ten engagement attribute types LivePerson documents, described once, as data.

Source: LivePerson's developer-center, "Types of Engagement Attributes" and the two best-practice
pages (chat, messaging). Validation (`consumer.formats.events`), ``FIELD_MAP`` targets and the
topic settings (`consumer.config`), ``convert``/``produce`` and the README's table, the stand-in
API and the demo all read these objects; nothing here imports the rest of the package.

An :class:`AttributeType` lists its :class:`Field` s. ``nest`` names the key the fields sit under
in the attribute sent (``{"type": "lead", "lead": {...}}``; ``ctmrinfo`` and ``mrktInfo`` both
nest in ``info``); ``None`` puts them beside ``type`` (cart, purchase, prodView, searchInfo). A
message carries the same fields flat, beside the routing fields, with objects and arrays as JSON.

Fields are described in `consumer.values.schema`'s words (import them from there): an INTEGER without a
documented range spans the 32-bit range LivePerson's "integer" is; ``personal`` marks a field
that carries personal data, whose value never appears in a log line, a trace, a metric or an
error detail.
"""

from __future__ import annotations

from consumer.values.schema import (
    ARRAY,
    BOOLEAN,
    ENUM,
    INT32_MAX,
    INT32_MIN,
    INTEGER,
    MAX_CURRENCY_CHARS,
    NUMBER,
    OBJECT,
    STRING,
    AttributeType,
    Choice,
    Field,
)

__all__ = [
    "ATTRIBUTES",
    "CHANNEL_NAMES",
    "GENDERS",
    "PHONE_TYPES",
    "PRODUCT",
    "PRODUCTS",
    "SERVICE_STATUS_NAMES",
    "TYPES",
    "attribute_type",
]


def _s(name: str, *, personal: bool = False, max_length: int | None = None, doc: str = "") -> Field:
    return Field(name, STRING, personal=personal, max_length=max_length, doc=doc)


def _i(
    name: str, lo: int = INT32_MIN, hi: int = INT32_MAX, *, personal: bool = False, req: bool = False
) -> Field:
    return Field(name, INTEGER, required=req, personal=personal, minimum=lo, maximum=hi)


def _enum(name: str, choices: tuple[Choice, ...], *, personal: bool = False) -> Field:
    return Field(name, ENUM, personal=personal, choices=choices)


def _names(*names: str) -> tuple[Choice, ...]:
    return tuple(Choice(n, n) for n in names)


def _date(name: str, *, personal: bool = False) -> Field:
    return Field(
        name,
        OBJECT,
        personal=personal,
        fields=(
            _i("day", 1, 31, personal=personal),
            _i("month", 1, 12, personal=personal),
            _i("year", 1, 9999, personal=personal),
        ),
    )


_CURRENCY = Field("currency", STRING, min_length=1, max_length=MAX_CURRENCY_CHARS, doc="e.g. USD")

SERVICE_STATUS_NAMES = (
    "Complete",
    "In Progress",
    "Approved",
    "Cancelled",
    "Not Approved",
    "Reviewed",
    "Missing Details",
    "Closed",
    "Removed",
    "Assigned",
    "Waiting for Customer Response",
    "Waiting for Response",
    "Pending",
    "Resolved",
)
CHANNEL_NAMES = ("Direct", "Search", "Social", "Email", "Referral")
GENDERS = ("MALE", "FEMALE", "OTHER")
PHONE_TYPES = ("HOME", "MOBILE", "WORK", "FAX", "MAIN", "HOME_FAX", "WORK_FAX", "PAGER", "OTHER")

PRODUCT = Field(
    "product",
    OBJECT,
    required=True,
    fields=(
        _s("name"),
        _s("category"),
        _s("sku"),
        Field("price", NUMBER),
        _s("statusInStock"),
        _i("quantityInStock", 0),
    ),
)
PRODUCTS = Field(
    "products",
    ARRAY,
    max_length=256,
    items=Field("products[]", OBJECT, fields=(PRODUCT, _i("quantity", 0))),
)

_PRODUCT_EXAMPLE = {
    "product": {"name": "prod1", "category": "category", "sku": "sku", "price": 7.8},
    "quantity": 1,
}

_TYPES = (
    AttributeType(
        name="lead",
        title="Lead",
        family="journey",
        nest="lead",
        fields=(_s("topic"), Field("value", NUMBER), _CURRENCY, _s("leadId")),
        setting="LEAD_TOPICS",
        chat="append",
        messaging="append",
        authenticated=False,
        example={"topic": "upgrade inquiry", "value": 200, "currency": "USD", "leadId": "xyz123"},
    ),
    AttributeType(
        name="service",
        title="Service activity",
        family="journey",
        nest="service",
        fields=(
            _s("topic"),
            _enum("status", tuple(Choice(i, n) for i, n in enumerate(SERVICE_STATUS_NAMES))),
            _s("category"),
            _s("serviceId"),
        ),
        setting="SERVICE_TOPICS",
        chat="append",
        messaging="replace",
        authenticated=False,
        example={
            "topic": "add user",
            "status": 0,
            "category": "account maintenance",
            "serviceId": "service12",
        },
    ),
    AttributeType(
        name="error",
        title="Visitor error",
        family="journey",
        nest="error",
        fields=(
            _s("contextId"),
            _s("message"),
            _s("code"),
            Field("level", INTEGER, minimum=-(2**63), maximum=2**63 - 1, doc="a long"),
            Field("resolved", BOOLEAN),
        ),
        setting="ERROR_TOPICS",
        chat="append",
        messaging="append",
        authenticated=False,
        example={
            "contextId": "Credit card application",
            "message": "Expiration date missing",
            "code": "er100004",
            "level": 10,
            "resolved": False,
        },
    ),
    AttributeType(
        name="searchInfo",
        title="Searched content",
        family="journey",
        nest=None,
        fields=(Field("keywords", ARRAY, max_length=100, items=_s("keywords[]")),),
        setting="SEARCHINFO_TOPICS",
        chat="append",
        messaging="append",
        authenticated=False,
        example={"keywords": ["Reset password"]},
    ),
    AttributeType(
        name="cart",
        title="Cart update",
        family="eCommerce",
        nest=None,
        fields=(Field("total", NUMBER, required=True), _CURRENCY, _i("numItems", 0, req=True), PRODUCTS),
        setting="CART_TOPICS",
        chat="replace",
        messaging="replace",
        authenticated=False,
        example={"total": 11.7, "currency": "USD", "numItems": 6, "products": [_PRODUCT_EXAMPLE]},
    ),
    AttributeType(
        name="purchase",
        title="Transaction",
        family="eCommerce",
        nest=None,
        fields=(
            Field("total", NUMBER),
            _CURRENCY,
            _s("orderId"),
            Field(
                "cart",
                OBJECT,
                fields=(
                    Field("products", ARRAY, required=True, max_length=256, items=PRODUCTS.items),
                    _i("numItems", 0),
                ),
            ),
        ),
        setting="PURCHASE_TOPICS",
        chat="append",
        messaging="append",
        authenticated=False,
        example={
            "total": 11.7,
            "currency": "USD",
            "orderId": "DRV1534XC",
            "cart": {"products": [_PRODUCT_EXAMPLE], "numItems": 1},
        },
    ),
    AttributeType(
        name="prodView",
        title="Viewed product",
        family="eCommerce",
        nest=None,
        fields=(_CURRENCY, PRODUCTS),
        setting="PRODVIEW_TOPICS",
        chat="append",
        messaging="append",
        authenticated=False,
        example={
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
    ),
    AttributeType(
        name="ctmrinfo",
        title="Customer info",
        family="visitor",
        nest="info",
        fields=(
            _s("ctype"),
            _s("cstatus"),
            Field("balance", NUMBER, personal=True),
            _CURRENCY,
            _s("customerId", personal=True, doc="marks the conversation authenticated"),
            _s("socialId", personal=True),
            _s("imei", personal=True),
            _s("userName", personal=True),
            _i("companySize", 0),
            _s("companyBranch"),
            _s("accountName"),
            _s("role"),
            _date("lastPaymentDate", personal=True),
            _date("registrationDate", personal=True),
            _i("loginStatus"),
            _s("storeZipCode"),
            _s("storeNumber"),
        ),
        setting="CTMRINFO_TOPICS",
        chat="update",
        messaging="replace",
        authenticated=True,
        example={
            "ctype": "vip",
            "cstatus": "cancelled",
            "balance": -400.99,
            "currency": "USD",
            "userName": "user000",
            "companySize": 500,
            "lastPaymentDate": {"day": 15, "month": 10, "year": 2014},
            "storeNumber": "123865",
        },
    ),
    AttributeType(
        name="mrktInfo",
        title="Marketing source",
        family="visitor",
        nest="info",
        fields=(
            _enum("channel", tuple(Choice(i, n) for i, n in enumerate(CHANNEL_NAMES))),
            _s("affiliate"),
            _s("campaignId"),
        ),
        setting="MRKTINFO_TOPICS",
        chat="update",
        messaging="replace",
        authenticated=False,
        example={"channel": "search", "affiliate": "Yahoo", "campaignId": "US coupon campaign"},
    ),
    AttributeType(
        name="personal",
        title="Personal info",
        family="visitor",
        nest="personal",
        fields=(
            _s("firstname", personal=True),
            _s("lastname", personal=True),
            Field(
                "age",
                OBJECT,
                personal=True,
                fields=(
                    _i("age", 0, 200, personal=True),
                    _i("year", 1, 9999, personal=True),
                    _i("month", 1, 12, personal=True),
                    _i("day", 1, 31, personal=True),
                ),
            ),
            Field(
                "contacts",
                ARRAY,
                personal=True,
                max_length=16,
                items=Field(
                    "contacts[]",
                    OBJECT,
                    personal=True,
                    fields=(
                        _s("email", personal=True),
                        _s("phone", personal=True),
                        _enum("phoneType", _names(*PHONE_TYPES), personal=True),
                        Field(
                            "address",
                            OBJECT,
                            personal=True,
                            fields=(_s("country", personal=True), _s("region", personal=True)),
                        ),
                    ),
                ),
            ),
            _enum("gender", _names(*GENDERS), personal=True),
            _s("company", personal=True),
            _s("language", personal=True, doc="e.g. en-US"),
        ),
        setting="PERSONAL_TOPICS",
        chat="update",
        messaging="replace",
        authenticated=True,
        example={
            "firstname": "John",
            "lastname": "Doe",
            "age": {"age": 34, "year": 1980, "month": 4, "day": 15},
            "contacts": [
                {
                    "email": "myname@example.com",
                    "phone": "+1 212-788-8877",
                    "phoneType": "mobile",
                    "address": {"country": "Russia", "region": "Moscow"},
                }
            ],
            "gender": "male",
            "language": "en-US",
            "company": "company",
        },
    ),
)

ATTRIBUTES: dict[str, AttributeType] = {t.name: t for t in _TYPES}
TYPES: tuple[str, ...] = tuple(ATTRIBUTES)


def attribute_type(name: str) -> AttributeType:
    """The type called `name`; ValueError naming the ten when there is none."""
    found = ATTRIBUTES.get(name)
    if found is None:
        raise ValueError(f"unknown attribute type {name!r} (one of {', '.join(TYPES)})")
    return found
