"""The ``identity`` command talks to a real server through the client."""

from __future__ import annotations

import json

from identity.cli import main


def test_link_then_resolve_from_the_command_line(server, capsys) -> None:
    assert main(["link", "customer_id:C-1001", "email:Anna@Example.com", "--source", "web",
                 "--address", server.address]) == 0
    linked = json.loads(capsys.readouterr().out)
    assert (linked["person_id"], linked["outcome"]) == ("C-1001", "LINK_OUTCOME_CREATED")
    assert main(["resolve", "email:anna@example.com", "--address", server.address]) == 0
    person = json.loads(capsys.readouterr().out)["person"]
    assert {i["identifier"]["value"] for i in person["identifiers"]} == {
        "C-1001", "anna@example.com"}


def test_a_refused_value_is_reported_with_its_status(server, capsys) -> None:
    assert main(["link", "phone:call me", "--address", server.address]) == 1
    assert "INVALID_ARGUMENT: identifiers[0].value" in capsys.readouterr().err
