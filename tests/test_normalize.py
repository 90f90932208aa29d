"""Normalisation: one real-world identifier is one value, and bad input is refused with a reason."""

from __future__ import annotations

import grpc
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from identity.errors import InvalidArgument
from identity.identifiers import Kind
from identity.normalize import Normalizer, NormalizeSettings

GOOD = [
    (Kind.EMAIL, "  Anna.Petrova@Example.COM ", "anna.petrova@example.com"),
    (Kind.EMAIL, "ivan@пример.рф", "ivan@xn--e1afmkfd.xn--p1ai"),
    (Kind.EMAIL, "Anna+shop@gmail.com", "anna+shop@gmail.com"),
    (Kind.EMAIL, "a.b.c@GoogleMail.com", "a.b.c@googlemail.com"),
    (Kind.PHONE, "+44 7700 900123", "+447700900123"),
    (Kind.PHONE, "(415) 555-2671", "+14155552671"),
    (Kind.PHONE, "+7 (912) 555-01-02", "+79125550102"),
    (Kind.PHONE, "tel:+1-415-555-2671", "+14155552671"),
    (Kind.LOYALTY_CARD, "4000 1234-5678.90", "4000123456789" + "0"),
    (Kind.CUSTOMER_ID, "  C-1001\t", "C-1001"),
    (Kind.CRM_ID, "crm:ABC", "crm:ABC"),
    (Kind.DEVICE_ID, "6F9619FF-8B86-D011-B42D-00CF4FC964FF", "6F9619FF-8B86-D011-B42D-00CF4FC964FF"),
]

BAD = [
    (Kind.EMAIL, "", "empty"),
    (Kind.EMAIL, "anna.example.com", "local@domain"),
    (Kind.EMAIL, "anna@", "local@domain"),
    (Kind.EMAIL, "an na@example.com", "forbidden"),
    (Kind.EMAIL, "anna..p@example.com", "dot"),
    (Kind.EMAIL, "anna@localhost", "dotted host"),
    (Kind.EMAIL, "anna@exa_mple.com", "host name"),
    (Kind.EMAIL, "x" * 250 + "@example.com", "longer"),
    (Kind.PHONE, "call me", "not a phone"),
    (Kind.PHONE, "+1 415", "possible"),
    (Kind.PHONE, "   ", "empty"),
    (Kind.LOYALTY_CARD, "ABC-123", "digits"),
    (Kind.LOYALTY_CARD, "12", "4 to 32"),
    (Kind.CUSTOMER_ID, "C" * 300, "longer"),
    (Kind.CRM_ID, "crm\x00id", "control"),
    (Kind.DEVICE_ID, " \t ", "empty"),
]


@pytest.mark.parametrize(("kind", "raw", "expected"), GOOD)
def test_good_values_normalise(kind: Kind, raw: str, expected: str) -> None:
    assert Normalizer().normalize(kind, raw).value == expected


@pytest.mark.parametrize(("kind", "raw", "reason"), BAD)
def test_bad_values_are_refused_with_a_reason(kind: Kind, raw: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Normalizer().normalize(kind, raw)
    assert err.value.violations[0].field == "value"
    assert reason in err.value.violations[0].reason


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        Normalizer().normalize(0, "x")
    assert err.value.violations[0].field == "kind"


def test_email_aliases_fold_only_when_the_deployment_opts_in() -> None:
    plain = Normalizer()
    folding = Normalizer(NormalizeSettings(fold_email_aliases=True))
    assert plain.normalize(Kind.EMAIL, "A.Nna+promo@googlemail.com").value == "a.nna+promo@googlemail.com"
    assert folding.normalize(Kind.EMAIL, "A.Nna+promo@googlemail.com").value == "anna@gmail.com"
    assert folding.normalize(Kind.EMAIL, "anna+x@outlook.com").value == "anna@outlook.com"
    assert folding.normalize(Kind.EMAIL, "anna+x@example.com").value == "anna+x@example.com"


def test_national_phone_numbers_use_the_default_region() -> None:
    gb = Normalizer(NormalizeSettings(default_region="GB"))
    assert gb.normalize(Kind.PHONE, "07700 900123").value == "+447700900123"
    assert Normalizer().normalize(Kind.PHONE, "+447700900123").value == "+447700900123"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["US", "CA", "GB", "DE"]), st.integers(2_000_000_000, 9_999_999_999),
       st.sampled_from(["{d}", "1{d}", "+1{d}", "({a}) {b}-{c}", "1-{a}-{b}-{c}",
                        "+1 {a}.{b}.{c}", "(+1) {a} {b} {c}", "+{d}"]))
def test_north_american_numbers_read_without_parsing_as_phonenumbers_reads_them(
        region: str, number: int, spelling: str) -> None:
    d = str(number)
    text = spelling.format(d=d, a=d[:3], b=d[3:6], c=d[6:])
    try:
        parsed = phonenumbers.parse(text, region)
        expected = (phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                    if phonenumbers.is_possible_number(parsed) else None)
    except phonenumbers.NumberParseException:
        expected = None
    try:
        got = Normalizer(NormalizeSettings(default_region=region)).normalize(Kind.PHONE, text)
    except InvalidArgument:
        got = None
    assert (got.value if got else None) == expected


def test_unknown_default_region_is_a_startup_error() -> None:
    with pytest.raises(ValueError):
        Normalizer(NormalizeSettings(default_region="QQ"))


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


@pytest.mark.parametrize(("kind", "raw", "reason"), BAD[:1] + BAD[8:9] + BAD[11:12] + BAD[14:15])
def test_bad_identifier_gets_invalid_argument_naming_the_field_and_writes_nothing(
    client, kind: Kind, raw: str, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.link("customer_id:C-9", (kind, raw), source="web")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = _violations(err.value)
    assert field == "identifiers[1].value"
    assert reason in description
    with pytest.raises(grpc.RpcError) as missing:
        client.resolve("customer_id:C-9")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
