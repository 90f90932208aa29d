"""``identity audit ...`` calls the same RPCs: report as JSON, a picture, a split."""

from __future__ import annotations

import json

from identity.cli import main
from test_audit import BOB, PHONE, glue_two_households


def test_report_json_picture_and_split_from_the_command_line(client, server, tmp_path, capsys):
    glue_two_households(client)
    assert main(["audit", "report", "--json", "--address", server.address]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert {f["kind"] for f in findings} == {"FINDING_KIND_HIGH_DEGREE", "FINDING_KIND_BRIDGE"}

    out = tmp_path / "anna.png"
    assert main(["audit", "picture", "--person-id", "C-ANNA", "--out", str(out),
                 "--address", server.address]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["audit", "split", "--identifier", PHONE, "--actor", "ann", "--reason", "shared",
                 "--address", server.address]) == 0
    assert "C-ANNA ->" in capsys.readouterr().out
    assert client.resolve(BOB[0]).person.person_id != "C-ANNA"
