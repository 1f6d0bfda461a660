"""`hwmatrix selftest` on real builds: an A/A run whose verdicts are counted and whose
samples come from interleaved engine processes."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import hwmatrix

pytestmark = pytest.mark.engines


def test_selftest_counts_every_aa_verdict_and_reports_the_false_positive_rate(tmp_path):
    store = tmp_path / "store"
    result = hwmatrix("selftest", "--rounds", "1", "--repetitions", "4", "--min-process-s", "0.2", "--store", store.as_uri(),
                      env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 0, result.stderr[-2000:]
    counts = {v: int(n) for v, n in re.findall(r"^\s+(same|unknown|slower|faster)\s+(\d+)$", result.stdout, re.M)}
    assert sum(counts.values()) == 8                      # 4 cells x pp/tg
    rate = re.search(r"false-positive rate: (\d+)/(\d+)", result.stdout)
    assert rate and int(rate[1]) == counts["slower"] + counts["faster"] and int(rate[2]) == 8
    assert re.search(r"median CV of one engine process \d+\.\d%", result.stdout)
    records = [json.loads(p.read_text()) for p in store.glob("runs/*/results/*/*.json")]
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    # min/max count processes: 4 each, every one with the calibrated -r of its cell
    assert all(len(set(s := r["metrics"]["tg_tps"]["process_sizes"])) == 1 and len(s) == 4 for r in records)
