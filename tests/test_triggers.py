"""Trigger suppression over gRPC: purchases anywhere, one person one message, caps, quiet hours."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import grpc
import pytest

from identity.client import IdentityClient, identifier
from identity.decisions import Decision, Reason, TriggerCheck
from identity.rpc.convert import timestamp_of
from identity.v1 import events_pb2 as ev
from identity.v1 import triggers_pb2 as tr

NOON = int(datetime(2026, 6, 3, 12, 0, tzinfo=UTC).timestamp() * 1000)  # a Wednesday
HOUR = 3_600_000
KETTLE = dict(product_id="K-42", category="Home/Kitchen/Kettles", brand="Bosch", price=39.99)
SEND, SUPPRESS, DEFER = tr.VERDICT_SEND, tr.VERDICT_SUPPRESS, tr.VERDICT_DEFER


def event(event_id: str, who: str, at: int, *, channel: int = ev.EVENT_CHANNEL_WEB,
          **payload) -> ev.Event:
    message = ev.Event(event_id=event_id, identifier=identifier(who), channel=channel,
                       source="test", **payload)
    message.time.FromMilliseconds(at)
    return message


def consent(event_id: str, who: str, at: int, *channels: int, time_zone: str | None = None
            ) -> ev.Event:
    stated = ev.AttributesEvent(consents=[ev.ChannelConsent(channel=c, granted=True)
                                          for c in channels])
    if time_zone:
        stated.time_zone = time_zone
    return event(event_id, who, at, attributes=stated)


def codes(reply: tr.CheckTriggerResponse) -> list[str]:
    return [tr.ReasonCode.Name(r.code).removeprefix("REASON_CODE_").lower() for r in reply.reasons]


def rule(**fields) -> tr.TriggerRule:
    return tr.TriggerRule(**fields)


def test_purchase_at_till_suppresses_abandoned_cart_on_site(client: IdentityClient):
    phone, email = "phone:+44 7700 900123", "email:anna@example.com"
    client.link(phone, email, source="app")  # the app account knows both
    client.track([
        consent("a1", email, NOON - 5 * HOUR, ev.EVENT_CHANNEL_EMAIL),
        event("v1", phone, NOON - 4 * HOUR, channel=ev.EVENT_CHANNEL_APP,
              view=ev.ProductEvent(**KETTLE)),
        event("c1", email, NOON - 3 * HOUR, add_to_cart=ev.ProductEvent(**KETTLE)),
    ])
    ask = dict(products=["K-42"], categories=["Home/Kitchen/Kettles"], campaign="cart-email",
               now=NOON, event_time=NOON - 3 * HOUR)
    before = client.check_trigger(email, "abandoned_cart", "email", **ask)
    assert before.verdict == SEND and before.address.value == "anna@example.com"

    client.record_purchase(ev.OrderEvent(order_id="T-17-1", lines=[ev.OrderLine(**KETTLE)]),
                           loyalty_card="4000 1234 5678", phone="+44 7700-900-123",
                           store="store-17", time=NOON - 2 * HOUR)
    after = client.check_trigger(email, "abandoned_cart", "email", **ask)
    assert after.verdict == SUPPRESS
    assert codes(after) == ["purchased"]
    assert after.reasons[0].attributes["order_id"] == "T-17-1"
    assert after.reasons[0].attributes["identifier"] == "loyalty_card:400012345678"
    assert not after.HasField("address")


def test_order_that_arrives_late_still_suppresses_by_its_event_time(client: IdentityClient):
    email = "email:late@example.com"
    client.track([consent("a1", email, NOON - 9 * HOUR, ev.EVENT_CHANNEL_EMAIL)])
    # reported now, but placed an hour after the cart event: event time decides
    client.track([event("o1", email, NOON - 2 * HOUR,
                        order=ev.OrderEvent(order_id="W-1", lines=[ev.OrderLine(**KETTLE)]))])
    late = client.check_trigger(email, "abandoned_cart", "email", products=["K-42"],
                                now=NOON, event_time=NOON - 3 * HOUR)
    assert codes(late) == ["purchased"]
    older = client.check_trigger(email, "abandoned_cart", "email", products=["K-42"],
                                 now=NOON, event_time=NOON - HOUR)  # bought before this cart
    assert older.verdict == SEND


def test_a_cancelled_order_or_one_of_other_products_does_not_suppress(client: IdentityClient):
    email = "email:cancel@example.com"
    client.track([
        consent("a1", email, NOON - 9 * HOUR, ev.EVENT_CHANNEL_EMAIL),
        event("o1", email, NOON - 2 * HOUR, order=ev.OrderEvent(
            order_id="W-9", lines=[ev.OrderLine(**KETTLE)])),
        event("o2", email, NOON - 2 * HOUR, order=ev.OrderEvent(
            order_id="W-10", lines=[ev.OrderLine(product_id="T-1", category="Home/Toasters")])),
    ])
    ask = dict(products=["K-42"], now=NOON, event_time=NOON - 3 * HOUR)
    assert codes(client.check_trigger(email, "abandoned_cart", "email", **ask)) == ["purchased"]
    client.track([event("x1", email, NOON - HOUR,
                        order_cancelled=ev.OrderCancelledEvent(order_id="W-9"))])
    after = client.check_trigger(email, "abandoned_cart", "email", **ask)
    assert after.verdict == SEND, codes(after)


def test_category_rule_suppresses_any_purchase_from_the_category(client: IdentityClient):
    email = "email:cat@example.com"
    client.set_trigger_rule(rule(trigger=tr.TRIGGER_KIND_ABANDONED_VIEW,
                                 purchase_match=tr.PURCHASE_MATCH_CATEGORY))
    client.track([
        consent("a1", email, NOON - 9 * HOUR, ev.EVENT_CHANNEL_EMAIL),
        event("o1", email, NOON - HOUR, order=ev.OrderEvent(order_id="W-2", lines=[
            ev.OrderLine(product_id="K-99", category="Home/Kitchen/Kettles/Glass")]))])
    view = client.check_trigger(email, "abandoned_view", "email", products=["K-42"],
                                categories=["Home/Kitchen/Kettles"], now=NOON,
                                event_time=NOON - 2 * HOUR)
    assert codes(view) == ["purchased"]
    assert view.reasons[0].attributes["category"] == "Home/Kitchen/Kettles"
    cart = client.check_trigger(email, "abandoned_cart", "email", products=["K-42"],
                                categories=["Home/Kitchen/Kettles"], now=NOON,
                                event_time=NOON - 2 * HOUR)  # default rule: products only
    assert cart.verdict == SEND


def test_two_devices_of_one_person_get_one_push(client: IdentityClient):
    client.link("customer_id:C-7", "device_id:phone-app", source="app", observed_at=NOON - HOUR)
    client.link("customer_id:C-7", "device_id:tablet-app", source="app",
                observed_at=NOON - 2 * HOUR)
    first = client.check_trigger("device_id:tablet-app", "price_drop", "push", products=["K-42"],
                                 now=NOON, reserve=True)
    assert first.verdict == SEND and first.reserved
    assert first.address.value == "phone-app"  # the most recently seen device
    second = client.check_trigger("device_id:phone-app", "price_drop", "push",
                                  products=["K-42"], now=NOON + 60_000, reserve=True)
    assert second.verdict == SUPPRESS and codes(second) == ["duplicate"]

    settings = tr.AudienceSettings(channel=ev.EVENT_CHANNEL_PUSH, campaign="summer",
                                   now=timestamp_of(NOON))
    replies = list(client.filter_audience(
        settings, [["device_id:phone-app", "customer_id:C-7"], ["device_id:tablet-app"]]))
    recipients = [r for reply in replies for r in reply.recipients]
    assert [(r.person_id, r.address.value) for r in recipients] == [("C-7", "phone-app")]
    summary = replies[-1].summary
    assert (summary.identifiers, summary.persons, summary.duplicates, summary.send) == (3, 1, 2, 1)


def test_channel_cap_counts_sends_through_every_identifier(client: IdentityClient):
    client.set_trigger_rule(rule(caps=[tr.FrequencyCap(
        scope=tr.CAP_SCOPE_CHANNEL, channel=ev.EVENT_CHANNEL_PUSH, limit=2,
        period=tr.CAP_PERIOD_DAY)]))
    client.link("customer_id:C-8", "device_id:d1", "device_id:d2", observed_at=NOON - HOUR)
    client.record_send("device_id:d1", "push", campaign="a", sent_at=NOON - 2 * HOUR)
    client.track([event("m1", "device_id:d2", NOON - HOUR, channel=ev.EVENT_CHANNEL_PUSH,
                        message=ev.MessageEvent(action=ev.MESSAGE_ACTION_SENT, campaign="b"))])
    capped = client.check_trigger("customer_id:C-8", "back_in_stock", "push",
                                  products=["K-1"], now=NOON)
    assert capped.verdict == SUPPRESS and codes(capped) == ["channel_cap"]
    midnight = datetime(2026, 6, 4, tzinfo=UTC)
    assert capped.reasons[0].until.ToDatetime(tzinfo=UTC) == midnight
    assert capped.reasons[0].attributes["count"] == "2"
    tomorrow = client.check_trigger("customer_id:C-8", "back_in_stock", "push",
                                    products=["K-1"], now=NOON + 22 * HOUR)
    assert tomorrow.verdict == SEND  # calendar day: yesterday's sends no longer count


def test_rolling_cap_counts_the_last_24_hours(client: IdentityClient):
    client.set_trigger_rule(rule(caps=[tr.FrequencyCap(
        scope=tr.CAP_SCOPE_CHANNEL, channel=ev.EVENT_CHANNEL_PUSH, limit=1,
        period=tr.CAP_PERIOD_DAY, rolling=True)]))
    client.link("customer_id:C-9", "device_id:d9", observed_at=NOON - HOUR)
    client.record_send("device_id:d9", "push", sent_at=NOON - 3 * HOUR)
    next_morning = client.check_trigger("device_id:d9", "reactivation", "push",
                                        now=NOON + 20 * HOUR)
    assert codes(next_morning) == ["channel_cap"]
    assert next_morning.reasons[0].until.ToMilliseconds() == NOON + 21 * HOUR


def test_campaign_cap_limits_one_campaign_not_others(client: IdentityClient):
    client.set_trigger_rule(rule(caps=[tr.FrequencyCap(
        scope=tr.CAP_SCOPE_CAMPAIGN, limit=1, period=tr.CAP_PERIOD_WEEK)]))
    client.link("customer_id:C-10", "device_id:d10", observed_at=NOON - HOUR)
    ask = dict(now=NOON, reserve=True)
    assert client.check_trigger("device_id:d10", "wishlist", "push", campaign="spring",
                                **ask).verdict == SEND
    again = client.check_trigger("device_id:d10", "price_drop", "push", campaign="spring", **ask)
    assert codes(again) == ["campaign_cap"]
    other = client.check_trigger("device_id:d10", "price_drop", "push", campaign="summer", **ask)
    assert other.verdict == SEND


def test_transactional_rule_is_exempt_from_caps(client: IdentityClient):
    zero = tr.FrequencyCap(scope=tr.CAP_SCOPE_CHANNEL, channel=ev.EVENT_CHANNEL_PUSH, limit=0,
                           period=tr.CAP_PERIOD_DAY)
    client.set_trigger_rule(rule(caps=[zero]))
    client.set_trigger_rule(rule(campaign="receipts", transactional=True, caps=[zero]))
    client.link("customer_id:C-11", "device_id:d11", observed_at=NOON - HOUR)
    marketing = client.check_trigger("device_id:d11", "custom", "push", campaign="promo", now=NOON)
    assert codes(marketing) == ["channel_cap"]
    receipt = client.check_trigger("device_id:d11", "custom", "push", campaign="receipts",
                                   now=NOON)
    assert receipt.verdict == SEND and receipt.rule == "*/receipts"


@pytest.mark.parametrize("time_zone, verdict, next_allowed", [
    ("Asia/Singapore", DEFER, datetime(2026, 6, 4, 1, 0, tzinfo=UTC)),  # 22:30 there
    ("Europe/London", SEND, None),  # 15:30 there
    ("America/Los_Angeles", DEFER, datetime(2026, 6, 3, 16, 0, tzinfo=UTC)),  # 07:30 there
    (None, SEND, None),  # no zone stated: the shop's (UTC), 14:30
])
def test_quiet_hours_defer_to_the_persons_morning(client: IdentityClient, time_zone, verdict,
                                                   next_allowed):
    device = f"device_id:{time_zone or 'shop-zone'}"
    client.track([consent("tz", device, NOON - HOUR, ev.EVENT_CHANNEL_PUSH,
                          time_zone=time_zone)])
    reply = client.check_trigger(device, "abandoned_view", "push", products=["K-42"],
                                 now=NOON + 150 * 60_000)
    assert reply.verdict == verdict
    if next_allowed:
        assert codes(reply) == ["quiet_hours"]
        assert reply.next_allowed.ToDatetime(tzinfo=UTC) == next_allowed
        assert reply.address.value == device.split(":", 1)[1]


def test_opt_out_and_missing_address_are_reasons_together(client: IdentityClient):
    email = "email:gone@example.com"
    client.track([event("u1", email, NOON - HOUR, channel=ev.EVENT_CHANNEL_EMAIL,
                        message=ev.MessageEvent(action=ev.MESSAGE_ACTION_UNSUBSCRIBED))])
    by_mail = client.check_trigger(email, "reactivation", "email", now=NOON)
    assert codes(by_mail) == ["opted_out"]
    by_sms = client.check_trigger(email, "reactivation", "sms", now=NOON)
    assert set(codes(by_sms)) == {"no_consent", "unreachable"}
    unknown = client.check_trigger("email:nobody@example.com", "reactivation", "email", now=NOON)
    assert codes(unknown) == ["unknown_identifier"]


def test_an_unsubscribe_counts_however_old_but_old_sends_and_orders_do_not(
        client: IdentityClient):
    """Decisions read orders and sends only as far back as a window reaches; unsubscribes
    are read whatever their age, and consent granted after one lifts it."""
    year = 365 * 24 * HOUR
    client.link("customer_id:C-16", "email:old@example.com", "device_id:d18",
                observed_at=NOON - 2 * year)
    push, mail = ev.EVENT_CHANNEL_PUSH, ev.EVENT_CHANNEL_EMAIL
    sent = ev.MessageEvent(action=ev.MESSAGE_ACTION_SENT, campaign="weekly")
    client.track([event("old-quit", "email:old@example.com", NOON - 2 * year, channel=mail,
                        message=ev.MessageEvent(action=ev.MESSAGE_ACTION_UNSUBSCRIBED)),
                  event("old-order", "customer_id:C-16", NOON - year,
                        order=ev.OrderEvent(order_id="O-old", lines=[ev.OrderLine(**KETTLE)]))]
                 + [event(f"w{i}", "device_id:d18", NOON - 30 * 24 * HOUR + i * HOUR,
                          channel=push, message=sent) for i in range(50)])
    by_mail = client.check_trigger("device_id:d18", "abandoned_cart", "email",
                                   products=["K-42"], now=NOON)
    assert codes(by_mail) == ["opted_out"]  # two years old, and still counts
    assert "unsubscribed from email" in by_mail.reasons[0].detail
    by_push = client.check_trigger("device_id:d18", "abandoned_cart", "push",
                                   products=["K-42"], now=NOON, event_time=NOON - 2 * HOUR)
    assert by_push.verdict == SEND  # a month-old burst of pushes, a year-old kettle: no reason
    settings = tr.AudienceSettings(channel=mail, campaign="winback", now=timestamp_of(NOON))
    summary = list(client.filter_audience(settings, [["device_id:d18"]]))[-1].summary
    reasons = [(c.code, c.count) for c in summary.suppressed_by_reason]
    assert summary.suppressed == 1 and reasons == [(tr.REASON_CODE_OPTED_OUT, 1)]
    client.track([consent("re-opt", "email:old@example.com", NOON - HOUR, mail)])
    again = client.check_trigger("device_id:d18", "abandoned_cart", "email",
                                 products=["K-42"], now=NOON)
    assert again.verdict == SEND


def test_concurrent_reserving_checks_send_exactly_once(server, client: IdentityClient):
    client.link("customer_id:C-12", "device_id:d12", "device_id:d13", observed_at=NOON - HOUR)
    threads, start = 12, threading.Barrier(12)
    verdicts: list[int] = []

    def ask(i: int) -> None:
        with IdentityClient(server.address) as own:
            start.wait()
            reply = own.check_trigger(f"device_id:d1{2 + i % 2}", "abandoned_cart", "push",
                                      products=["K-42"], now=NOON, reserve=True)
            verdicts.append(reply.verdict)

    pool = [threading.Thread(target=ask, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sorted(verdicts) == [SEND] + [SUPPRESS] * (threads - 1)


def test_idempotency_key_returns_the_first_decision(client: IdentityClient):
    client.link("customer_id:C-13", "device_id:d14", observed_at=NOON - HOUR)
    ask = dict(products=["K-42"], now=NOON, reserve=True, idempotency_key="cart:evt-1")
    first = client.check_trigger("device_id:d14", "abandoned_cart", "push", **ask)
    retry = client.check_trigger("device_id:d14", "abandoned_cart", "push", **ask)
    assert first.verdict == retry.verdict == SEND
    assert retry.replayed and not first.replayed
    assert retry.address == first.address
    client.record_send("device_id:d14", "push", trigger="abandoned_cart", products=["K-42"],
                       sent_at=NOON, idempotency_key="cart:evt-1")  # confirms, counts once
    fresh = client.check_trigger("device_id:d14", "wishlist", "push", now=NOON + 1)
    assert fresh.verdict == SEND  # 1 of the default 2 pushes a day: no double count


def test_a_message_event_under_a_sends_key_counts_once(client: IdentityClient):
    """A message event whose event id is a reserved send's idempotency key is that send."""
    client.link("customer_id:C-15", "device_id:d16", "device_id:d17", observed_at=NOON - HOUR)
    ask = dict(products=["K-42"], now=NOON - HOUR, reserve=True, idempotency_key="push-1")
    assert client.check_trigger("device_id:d16", "abandoned_cart", "push", **ask).reserved
    sent = ev.MessageEvent(action=ev.MESSAGE_ACTION_SENT, campaign="c")
    client.track([event("push-1", "device_id:d17", NOON - HOUR + 5,
                        channel=ev.EVENT_CHANNEL_PUSH, message=sent)])
    second = client.check_trigger("customer_id:C-15", "wishlist", "push", now=NOON)
    assert second.verdict == SEND  # 1 of the default 2 pushes a day, not 2
    client.track([event("push-2", "device_id:d17", NOON - HOUR + 9,
                        channel=ev.EVENT_CHANNEL_PUSH, message=sent)])
    capped = client.check_trigger("customer_id:C-15", "wishlist", "push", now=NOON)
    assert capped.verdict == SUPPRESS and codes(capped) == ["channel_cap"]
    assert capped.reasons[0].attributes["count"] == "2"


def test_a_message_event_counts_when_its_reservation_is_older_than_every_window(
        client: IdentityClient):
    """A reservation made days before its push went out: the push, reported as a message
    event under the reservation's key, counts on the day it went out."""
    client.set_trigger_rule(rule(campaign="slow", caps=[tr.FrequencyCap(
        scope=tr.CAP_SCOPE_CHANNEL, channel=ev.EVENT_CHANNEL_PUSH, limit=1,
        period=tr.CAP_PERIOD_DAY)], dedupe_window={"seconds": 60}))
    client.link("customer_id:C-17", "device_id:d19", observed_at=NOON - 72 * HOUR)
    ask = dict(campaign="slow", now=NOON - 48 * HOUR, reserve=True, idempotency_key="late-1")
    assert client.check_trigger("device_id:d19", "wishlist", "push", **ask).reserved
    client.track([event("late-1", "device_id:d19", NOON - HOUR, channel=ev.EVENT_CHANNEL_PUSH,
                        message=ev.MessageEvent(action=ev.MESSAGE_ACTION_SENT,
                                                campaign="slow"))])
    today = client.check_trigger("device_id:d19", "back_in_stock", "push", campaign="slow",
                                 now=NOON)
    assert codes(today) == ["channel_cap"]  # 1 of 1 pushes today


def test_failed_send_releases_its_reservation(client: IdentityClient):
    client.link("customer_id:C-14", "device_id:d15", observed_at=NOON - HOUR)
    ask = dict(products=["K-42"], now=NOON, reserve=True, idempotency_key="k-2")
    assert client.check_trigger("device_id:d15", "wishlist", "push", **ask).reserved
    released = client.record_send("device_id:d15", "push", idempotency_key="k-2", failed=True)
    assert released.matched_reservation and not released.recorded
    again = client.check_trigger("device_id:d15", "wishlist", "push", **ask)
    assert again.verdict == SEND and again.reserved and not again.replayed


def test_rules_from_config_and_rpc_survive_restart(make_server):
    server = make_server(triggers={
        "shop_time_zone": "Europe/Berlin",
        "default": {"dedupe_window": "24h"},
        "rule": [{"trigger": "review_request", "quiet_hours": {"email": "20:00-08:00"}}],
    })
    with IdentityClient(server.address) as client:
        client.set_trigger_rule(rule(campaign="vip", dedupe_window={"seconds": 60}))
        got = client.get_trigger_rule("review_request")
        assert got.origin == "config" and got.matched == "review_request/*"
        assert got.rule.dedupe_window.seconds == 24 * 3600  # inherited from [triggers.default]
    server = server.restart()
    with IdentityClient(server.address) as client:
        vip = client.get_trigger_rule("abandoned_cart", "vip")
        assert vip.origin == "stored" and vip.rule.dedupe_window.seconds == 60
        listed = client.list_trigger_rules()
        assert listed.shop_time_zone == "Europe/Berlin"
        assert [r.campaign for r in listed.rules] == ["vip", ""]


def test_sends_before_a_restart_still_count_after_it(make_server):
    """The log's in-memory marks of which nodes have sends are rebuilt from LMDB on start."""
    server = make_server()
    cap = tr.FrequencyCap(scope=tr.CAP_SCOPE_CHANNEL, channel=ev.EVENT_CHANNEL_PUSH, limit=1,
                          period=tr.CAP_PERIOD_DAY)
    with IdentityClient(server.address) as client:
        client.set_trigger_rule(rule(caps=[cap]))
        client.link("customer_id:C-R", "device_id:r1", "device_id:r2", "device_id:r3",
                    observed_at=NOON - HOUR)
        client.link("customer_id:C-S", "device_id:s1", observed_at=NOON - HOUR)
        client.record_send("device_id:r2", "push", campaign="a", sent_at=NOON - 2 * HOUR)
        before = client.check_trigger("device_id:r3", "back_in_stock", "push",
                                      products=["K-1"], now=NOON)
    server = server.restart()
    with IdentityClient(server.address) as client:
        after = client.check_trigger("device_id:r3", "back_in_stock", "push",
                                     products=["K-1"], now=NOON)
        other = client.check_trigger("device_id:s1", "back_in_stock", "push",
                                     products=["K-1"], now=NOON)
    assert codes(before) == codes(after) == ["channel_cap"]
    assert other.verdict == SEND


def test_bad_rule_and_bad_check_name_the_field(client: IdentityClient):
    with pytest.raises(grpc.RpcError) as bad_rule:
        client.set_trigger_rule(rule(quiet_hours=[tr.QuietHours(channel=ev.EVENT_CHANNEL_PUSH,
                                                                window="late")]))
    assert bad_rule.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rule.quiet_hours[0].window" in bad_rule.value.details()
    with pytest.raises(grpc.RpcError) as bad_channel:
        client.check_trigger("email:a@example.com", "abandoned_cart", "web")
    assert "channel" in bad_channel.value.details()


def test_exclusion_segment_of_the_rule_suppresses_and_segments_feed_audiences(
        client: IdentityClient):
    for n in (1, 2, 3):
        client.link(f"customer_id:S-{n}", f"device_id:s{n}", observed_at=NOON - HOUR)
    client.set_tag("customer_id:S-1", "vip", at=NOON - HOUR)
    client.set_tag("customer_id:S-2", "vip", at=NOON - HOUR)
    client.set_tag("customer_id:S-2", "complained", at=NOON - HOUR)
    client.save_segment("vips", {"tag": {"name": "vip"}})
    client.save_segment("complainers", {"tag": {"name": "complained"}})
    client.set_trigger_rule(rule(campaign="vip-week", exclusion_segments=["complainers"]))
    excluded = client.check_trigger("device_id:s2", "custom", "push", campaign="vip-week",
                                    now=NOON)
    assert codes(excluded) == ["excluded_segment"]
    assert excluded.reasons[0].attributes["segment"] == "complainers"

    settings = tr.AudienceSettings(channel=ev.EVENT_CHANNEL_PUSH, campaign="vip-week",
                                   now=timestamp_of(NOON))
    replies = list(client.filter_audience(settings, [["device_id:s1", "device_id:s3"]],
                                          segments=["vips"]))
    sent = sorted(r.person_id for reply in replies for r in reply.recipients)
    assert sent == ["S-1", "S-3"]
    summary = replies[-1].summary
    assert (summary.identifiers, summary.duplicates, summary.suppressed) == (4, 1, 1)
    assert [(c.code, c.count) for c in summary.suppressed_by_reason] == [
        (tr.REASON_CODE_EXCLUDED_SEGMENT, 1)]


@pytest.mark.parametrize("cls", [TriggerCheck, Decision, Reason])
def test_hand_written_inits_set_every_field_and_stay_frozen(cls):
    """TriggerCheck, Decision and Reason fill their fields by hand (for speed): a field added to the
    class but not to its __init__ must fail here, not go missing in a replayed decision."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {name: f"v{i}" for i, name in enumerate(names)}
    made = cls(**values)
    assert {name: getattr(made, name) for name in names} == values
    assert list(vars(made)) == names
    assert dataclasses.replace(made, **{names[0]: "new"}) == cls(**{**values, names[0]: "new"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, names[0], "changed")
