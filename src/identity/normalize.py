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
from itertools import islice

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
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KIND_OF: dict[object, Kind] = {int(kind): kind for kind in Kind}
_PHONE_PUNCTUATION = str.maketrans("", "", " ().-")
_PHONE_BARE = re.compile(r"^\+?[0-9]{3,}$")
_PHONE_MAX_INPUT = 250  # phonenumbers refuses longer input before looking at it
# A North American number written as bare digits: its E.164 form needs no parsing (below).
_NANP_BARE = re.compile(r"^(\+1|1)?([2-9][0-9]{9})$")
CACHE_SIZE = 262_144
# Module globals: ``Kind.EMAIL`` is a class attribute lookup, slow on the per-identifier path.
_EMAIL, _PHONE, _CARD = Kind.EMAIL, Kind.PHONE, Kind.LOYALTY_CARD


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
        self._nanp = phonenumbers.country_code_for_region(
            self.settings.default_region.upper()) == 1
        # Per kind, a raw spelling's cache key -> normalised value. Plain strings on purpose:
        # a dict of strings is never walked by the garbage collector, while (Kind, str) keys
        # and Identifier values stay tracked, and a full collection over hundreds of
        # thousands of them cost a fifth of a link's CPU.
        self._caches: dict[Kind, dict[str, str]] = {kind: {} for kind in Kind}

    def normalize(self, kind: Kind | int, value: str) -> Identifier:
        """The normalised identifier; ``InvalidArgument`` on field ``value`` (or ``kind``)."""
        known = _KIND_OF.get(kind)
        if known is None:
            raise InvalidArgument.field("kind", "identifier kind is unset or unknown")
        if not isinstance(value, str):
            return self._normalize(known, value)
        cache = self._caches[known]
        key = _cache_key(known, value)
        hit = cache.get(key)
        if hit is not None:
            return Identifier(known, hit)
        result = self._normalize(known, value)  # errors come from the value as sent, uncached
        if len(cache) >= CACHE_SIZE:  # drop the older half (dicts keep insertion order)
            for old in list(islice(cache, CACHE_SIZE // 2)):
                cache.pop(old, None)  # another thread may have dropped it already
        cache[key] = result.value
        return result

    def _normalize(self, kind: Kind, value: str) -> Identifier:
        if not isinstance(value, str):
            raise InvalidArgument.field("value", "must be a string")
        text = value.strip()
        if not text:
            raise InvalidArgument.field("value", f"{kind.label} is empty")
        if kind is _EMAIL:
            return Identifier(kind, self._email(text))
        if kind is _PHONE:
            return Identifier(kind, self._phone(text))
        if kind is _CARD:
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
        ascii_domain = _ascii_domain(domain)
        local = unicodedata.normalize("NFC", local).lower()
        if self.settings.fold_email_aliases:
            local, ascii_domain = _fold_alias(local, ascii_domain)
        return f"{local}@{ascii_domain}"

    def _phone(self, text: str) -> str:
        fast = self._nanp_e164(text)
        if fast is not None:
            return fast
        try:
            number = phonenumbers.parse(text, self.settings.default_region.upper())
        except phonenumbers.NumberParseException as exc:
            raise _bad(f"not a phone number ({exc._msg})") from None
        if not phonenumbers.is_possible_number(number):
            raise _bad("not a possible phone number for its country (wrong length)")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def _nanp_e164(self, text: str) -> str | None:
        """``+1NXXXXXXXXX`` without ``phonenumbers`` for the commonest spellings, else None.

        Ten digits starting 2-9, after ``+1`` (any region), or bare or after ``1`` when the
        default region is North American: ``phonenumbers`` reads them as country code 1 and
        those ten digits (one more leading digit is too long for any NANP region, so the
        ``1`` is the country code; no national prefix applies to 2-9), and ten digits is a
        possible length. The punctuation dropped first is the one ``_cache_key`` drops.
        """
        if len(text) > _PHONE_MAX_INPUT:
            return None
        match = _NANP_BARE.match(text.translate(_PHONE_PUNCTUATION))
        if match is None or (match.group(1) != "+1" and not self._nanp):
            return None
        return "+1" + match.group(2)

    def _plain_id(self, kind: Kind, text: str) -> str:
        if len(text) > self.settings.max_id_length:
            raise _bad(f"{kind.label} longer than {self.settings.max_id_length} characters")
        if _has_control(text):
            raise _bad(f"{kind.label} contains control characters")
        return unicodedata.normalize("NFC", text)


@lru_cache(maxsize=65_536)
def _ascii_domain(domain: str) -> str:
    """The checked IDNA form of an e-mail domain; cached, as a shop sees few domains."""
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise _bad(f"email domain is not a valid host name ({exc})") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise _bad("email domain must be a dotted host name such as example.com")
    if labels[-1].isdigit():
        raise _bad("email domain must not end in a numeric label")
    return ascii_domain


def _cache_key(kind: Kind, value: str) -> str:
    """A spelling shared by values that normalise alike (or fail alike), to widen cache hits.

    Safe by construction: surrounding blanks are stripped first by every rule; an ASCII
    e-mail is valid or not regardless of case and lower-cases to the same result; a phone
    number of at least three digits written with only digits, blanks, ``().-`` and a
    leading ``+`` parses the same as its bare digits (``phonenumbers`` drops that
    punctuation before reading the digits, and none of it can start an extension).
    """
    text = value.strip()
    if kind is _EMAIL:
        return text.lower() if text.isascii() else text
    if kind is _PHONE and len(value) <= _PHONE_MAX_INPUT:
        bare = text.translate(_PHONE_PUNCTUATION)
        if _PHONE_BARE.match(bare):
            return bare
    return text


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
    if text.isascii():  # the only ASCII Cc/Cf characters are C0 controls and DEL
        return _ASCII_CONTROL.search(text) is not None
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def _bad(reason: str) -> InvalidArgument:
    return InvalidArgument.field("value", reason)
