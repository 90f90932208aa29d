"""Normalise raw identifier values so that one real-world identifier is one graph node.

Rules per kind (documented in docs/IDENTIFIERS.md):
- email: trimmed, lower-cased, domain in IDNA (punycode) form, syntax checked;
  provider aliases (gmail dots, ``+tag``) folded only when the deployment opts in.
- phone: E.164 via ``phonenumbers`` with a default region for national numbers.
  A number must be *possible* (right length for its country), not *valid*: the
  validity metadata lags new number ranges, and refusing a real customer's phone
  is worse than keeping a number we cannot classify.
- loyalty_card: separators (space, dash, dot) dropped; digits only.
- customer_id, crm_id, device_id: trimmed, no control characters, length-limited.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import idna
import phonenumbers

from identity.errors import InvalidArgument
from identity.identifiers import Identifier, Kind

__all__ = ["Normalizer", "NormalizeSettings", "MAX_ID_LENGTH"]

MAX_ID_LENGTH = 256
MAX_EMAIL_LENGTH = 254
MAX_CARD_DIGITS = 32
MIN_CARD_DIGITS = 4

_LOCAL_FORBIDDEN = re.compile(r'[\s@<>()\[\]\\,;:"]')
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CARD_SEPARATORS = re.compile(r"[\s.\-]")
_PLUS_PROVIDERS = frozenset(
    {"outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com", "fastmail.com",
     "proton.me", "protonmail.com", "yandex.ru", "ya.ru"}
)
_GMAIL = frozenset({"gmail.com", "googlemail.com"})


@dataclass(frozen=True)
class NormalizeSettings:
    """Per-deployment choices that change what counts as the same identifier."""

    default_region: str = "US"
    fold_email_aliases: bool = False
    max_id_length: int = MAX_ID_LENGTH


class Normalizer:
    """Turns raw ``(kind, value)`` pairs into ``Identifier``s or raises ``InvalidArgument``.

    Results are cached: the same phone or e-mail arrives again and again, and
    parsing a phone number costs tens of microseconds.
    """

    def __init__(self, settings: NormalizeSettings | None = None):
        self.settings = settings or NormalizeSettings()
        if phonenumbers.country_code_for_region(self.settings.default_region.upper()) == 0:
            raise ValueError(f"unknown phone region {self.settings.default_region!r}")
        self._cached = lru_cache(maxsize=262_144)(self._normalize)

    def normalize(self, kind: Kind | int, value: str) -> Identifier:
        """The normalised identifier; ``InvalidArgument`` on field ``value`` (or ``kind``)."""
        try:
            kind = Kind(kind)
        except ValueError:
            raise InvalidArgument.field("kind", "identifier kind is unset or unknown") from None
        return self._cached(kind, value)

    def _normalize(self, kind: Kind, value: str) -> Identifier:
        if not isinstance(value, str):
            raise InvalidArgument.field("value", "must be a string")
        text = value.strip()
        if not text:
            raise InvalidArgument.field("value", f"{kind.label} is empty")
        if kind is Kind.EMAIL:
            return Identifier(kind, self._email(text))
        if kind is Kind.PHONE:
            return Identifier(kind, self._phone(text))
        if kind is Kind.LOYALTY_CARD:
            return Identifier(kind, _card(text))
        return Identifier(kind, self._plain_id(kind, text))

    def _email(self, text: str) -> str:
        if len(text) > MAX_EMAIL_LENGTH:
            raise _bad(f"email longer than {MAX_EMAIL_LENGTH} characters")
        local, at, domain = text.rpartition("@")
        if not at or not local or not domain:
            raise _bad("email must look like local@domain")
        if len(local) > 64 or _LOCAL_FORBIDDEN.search(local) or _has_control(local):
            raise _bad("email local part has forbidden characters or is too long")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            raise _bad("email local part has a misplaced dot")
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii").lower()
        except idna.IDNAError as exc:
            raise _bad(f"email domain is not a valid host name ({exc})") from None
        labels = ascii_domain.split(".")
        if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
            raise _bad("email domain must be a dotted host name such as example.com")
        if labels[-1].isdigit():
            raise _bad("email domain must not end in a numeric label")
        local = unicodedata.normalize("NFC", local).lower()
        if self.settings.fold_email_aliases:
            local, ascii_domain = _fold_alias(local, ascii_domain)
        return f"{local}@{ascii_domain}"

    def _phone(self, text: str) -> str:
        try:
            number = phonenumbers.parse(text, self.settings.default_region.upper())
        except phonenumbers.NumberParseException as exc:
            raise _bad(f"not a phone number ({exc._msg})") from None
        if not phonenumbers.is_possible_number(number):
            raise _bad("not a possible phone number for its country (wrong length)")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def _plain_id(self, kind: Kind, text: str) -> str:
        if len(text) > self.settings.max_id_length:
            raise _bad(f"{kind.label} longer than {self.settings.max_id_length} characters")
        if _has_control(text):
            raise _bad(f"{kind.label} contains control characters")
        return unicodedata.normalize("NFC", text)


def _card(text: str) -> str:
    digits = _CARD_SEPARATORS.sub("", text)
    if not digits.isascii() or not digits.isdigit():
        raise _bad("loyalty card must be digits (spaces, dashes and dots are ignored)")
    if not MIN_CARD_DIGITS <= len(digits) <= MAX_CARD_DIGITS:
        raise _bad(f"loyalty card must have {MIN_CARD_DIGITS} to {MAX_CARD_DIGITS} digits")
    return digits


def _fold_alias(local: str, domain: str) -> tuple[str, str]:
    if domain in _GMAIL:
        return local.split("+", 1)[0].replace(".", ""), "gmail.com"
    if domain in _PLUS_PROVIDERS:
        return local.split("+", 1)[0], domain
    return local, domain


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def _bad(reason: str) -> InvalidArgument:
    return InvalidArgument.field("value", reason)
