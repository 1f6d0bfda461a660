"""`hwmatrix bisect` on real builds of real commit chains (tests/chains.py): it names the planted
commit within the build budget, skips the commit that does not compile, calls same-code commits
the same unmeasured, reports two changes as two, replays a finished bisect from the store, and
`hwmatrix report --bisect` shows it."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from tests.chains import CHAIN_8, CHAIN_TWO, CULPRIT_8, CULPRITS_TWO, chain_repo
from tests.conftest import hwmatrix

pytestmark = pytest.mark.engines


def _bisect(repo: Path, store: Path, root: Path, *extra: str):
    return hwmatrix("bisect", "--repo", str(repo), "--good", "v0.3.36", "--bad", "chain", "-m", "tiny",
                    "--store", store.as_uri(), *extra, env={"HWMATRIX_SPOOL": str(root / "spool")})


def _journal(store: Path) -> dict:
    found = list(store.glob("**/bisects/*/journal.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.fixture(scope="module")
def chain8(tmp_path_factory):
    root = tmp_path_factory.mktemp("bisect8")
    repo, shas = chain_repo(root, CHAIN_8)
    store = root / "store"
    started = time.monotonic()
    result = _bisect(repo, store, root)
    return {"root": root, "repo": repo, "shas": shas, "store": store, "result": result,
            "seconds": time.monotonic() - started}


def test_bisect_names_the_planted_commit_within_log2_plus_two_builds(chain8):
    result, shas = chain8["result"], chain8["shas"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"culprit **{shas[CULPRIT_8][:12]}** '{CULPRIT_8}: slow'" in result.stdout, result.stdout
    journal = _journal(chain8["store"])
    outcome = journal["result"]
    assert outcome["status"] == "found" and [c["culprit"] for c in outcome["changes"]] == [CULPRIT_8]
    n = len(CHAIN_8)
    assert outcome["totals"]["builds_beyond_ends"] <= math.ceil(math.log2(n)) + 2, outcome["totals"]
    confirm = outcome["changes"][0]["confirm"]
    assert confirm["verdict"] == "slower" and confirm["ci_high"] < 1, confirm


def test_the_commit_that_does_not_compile_is_skipped_and_said_so(chain8):
    broken = CHAIN_8.index("broken") + 1
    steps = _journal(chain8["store"])["result"]["steps"]
    skipped = [s for s in steps if s["commit"] == broken]
    assert skipped and skipped[0]["verdict"] == "skipped" and "build_failed" in skipped[0]["note"], steps
    assert f"{chain8['shas'][broken][:10]}" in chain8["result"].stdout and "skipped" in chain8["result"].stdout


def test_a_commit_with_the_same_code_as_an_end_is_not_measured(chain8):
    journal = _journal(chain8["store"])
    same = [s for s in journal["result"]["steps"] if s["verdict"] == "same code"]
    assert same, journal["result"]["steps"]
    # it may be a bracket's end later, but it is never measured to decide its own side
    candidates = {cand for m in journal["measures"].values() for _, cand in m["pairs"]}
    assert not {s["commit"] for s in same} & candidates, journal["measures"]


def test_running_the_same_bisect_again_replays_it_without_building_or_measuring(chain8):
    started = time.monotonic()
    again = _bisect(chain8["repo"], chain8["store"], chain8["root"])
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-2000:]
    assert "replaying" in again.stderr and "  build " not in again.stderr and "  measure " not in again.stderr
    assert f"culprit **{chain8['shas'][CULPRIT_8][:12]}**" in again.stdout
    assert took < chain8["seconds"] / 3, (took, chain8["seconds"])


def test_report_shows_the_bisect(chain8):
    journal = _journal(chain8["store"])
    shown = hwmatrix("report", "--bisect", journal["bisect_id"], "--store", chain8["store"].as_uri())
    assert shown.returncode == 0, shown.stderr
    assert f"culprit **{chain8['shas'][CULPRIT_8][:12]}**" in shown.stdout and "path:" in shown.stdout
    assert "totals:" in shown.stdout


def test_two_planted_slowdowns_are_reported_as_two_changes(tmp_path):
    repo, shas = chain_repo(tmp_path, CHAIN_TWO)
    store = tmp_path / "store"
    result = _bisect(repo, store, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = _journal(store)["result"]
    assert outcome["status"] == "found", outcome["message"]
    assert sorted(c["culprit"] for c in outcome["changes"]) == CULPRITS_TWO, outcome["changes"]
    assert "2 changes" in result.stdout
    for i in CULPRITS_TWO:
        assert f"culprit **{shas[i][:12]}**" in result.stdout
