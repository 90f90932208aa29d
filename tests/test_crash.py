"""Crash safety, at CI speed: a few SIGKILLs during a streaming import lose nothing acknowledged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "crash_test.py"


def test_killed_server_keeps_every_acknowledged_batch_and_no_half_batch(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "3", "--clients", "2", "--up", "0.1", "0.4",
         "--down", "0", "--warmup", "0.3", "--tail", "0.3", "--links-per-batch", "10",
         "--events-per-batch", "10", "--resolve-sample", "50", "--seed", "7",
         "--data", str(tmp_path / "crash")],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "3 SIGKILLs" in result.stdout and "problems: none" in result.stdout
    acknowledged = next(line for line in result.stdout.splitlines() if "link batches" in line)
    assert "acknowledged 0 " not in acknowledged  # the clients got batches through
