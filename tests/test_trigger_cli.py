"""``identity trigger ...`` asks, records and filters through the same client calls."""

from __future__ import annotations

import json

from identity.cli import main
from identity.client import IdentityClient

NOON = "2026-06-03T12:00:00+00:00"  # outside the default quiet hours


def _run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_two_devices_get_one_push_from_the_command_line(client: IdentityClient, server,
                                                        capsys, tmp_path) -> None:
    client.link("customer_id:C-7", "device_id:phone-app", source="app")
    client.link("customer_id:C-7", "device_id:tablet-app", source="app")
    at = ["--address", server.address]
    first = json.loads(_run(capsys, "trigger", "check", "device_id:tablet-app", "--trigger",
                            "price_drop", "--channel", "push", "--product", "K-42", "--now",
                            NOON, "--reserve", "--key", "drop-1", *at))
    assert first["verdict"] == "VERDICT_SEND" and first["reserved"]
    second = json.loads(_run(capsys, "trigger", "check", "device_id:phone-app", "--trigger",
                             "price_drop", "--channel", "push", "--product", "K-42", "--now",
                             NOON, *at))
    assert second["verdict"] == "VERDICT_SUPPRESS"
    assert [r["code"] for r in second["reasons"]] == ["REASON_CODE_DUPLICATE"]

    ids = tmp_path / "ids.txt"
    ids.write_text("device_id:phone-app\n\ncustomer_id:C-7\ndevice_id:tablet-app\n")
    lines = _run(capsys, "trigger", "audience", str(ids), "--trigger", "reactivation",
                 "--channel", "push", "--campaign", "summer", "--now", NOON, *at)
    recipient, summary = lines.split("\n", 1)
    assert json.loads(recipient)["person_id"] == "C-7"
    summary = json.loads(summary)
    assert (summary["identifiers"], summary["persons"], summary["send"]) == ("3", "1", "1")


def test_rules_are_set_and_read_from_the_command_line(client: IdentityClient, server,
                                                      capsys, tmp_path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"trigger": "TRIGGER_KIND_ABANDONED_CART", "campaign": "spring",
                                "caps": [{"scope": "CAP_SCOPE_CHANNEL",
                                          "channel": "EVENT_CHANNEL_PUSH", "limit": 1,
                                          "period": "CAP_PERIOD_DAY"}]}))
    at = ["--address", server.address]
    _run(capsys, "trigger", "set-rule", str(rule), *at)
    got = json.loads(_run(capsys, "trigger", "rule", "--trigger", "abandoned_cart",
                          "--campaign", "spring", *at))
    assert got["rule"]["caps"][0]["limit"] == 1
    assert "spring" in _run(capsys, "trigger", "rules", *at)
    client.link("customer_id:C-9", "device_id:d-1", source="app")
    sent = json.loads(_run(capsys, "trigger", "sent", "device_id:d-1", "--channel", "push",
                           "--trigger", "abandoned_cart", "--campaign", "spring",
                           "--at", "2026-06-03T10:00:00+00:00", *at))
    assert sent["recorded"] and sent["person_id"] == "C-9"
    capped = json.loads(_run(capsys, "trigger", "check", "customer_id:C-9", "--trigger",
                             "abandoned_cart", "--channel", "push", "--campaign", "spring",
                             "--now", NOON, *at))
    assert [r["code"] for r in capped["reasons"]] == ["REASON_CODE_CHANNEL_CAP"]
