"""The owner's policy: which cells a volunteer agent runs, and when (quick, no network)."""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections import namedtuple
from datetime import datetime
from pathlib import Path

import pytest

from agent.volunteer import policy as P
from agent.volunteer.offer import lease_terms, refusal, terms_allow
from agent.volunteer.policy import (
    IdlePolicy,
    Ledger,
    OwnerPolicy,
    PolicyError,
    disk_problem,
    idle_problem,
    load_policy,
    pause_reason,
    prune,
)
from agent.volunteer.source_names import source_id

REPO = Path(__file__).resolve().parents[1]
LLAMA = "https://github.com/ggml-org/llama.cpp"
# 2024-05-01 is a Wednesday
WED = datetime(2024, 5, 1)


def at(day: int, hh: int, mm: int = 0) -> datetime:
    """2024-05-<day> hh:mm; May 2024: 4 = Sat, 5 = Sun, 6 = Mon."""
    return datetime(2024, 5, day, hh, mm)


def spec(repo: str | None = LLAMA, sdist: str | None = None, kind: str = "tag", value: str = "b4000",
         gpus: int | None = None) -> dict:
    engine = {"name": "e", "kind": "llama.cpp", "cmake": []}
    if sdist:
        engine["sdist"] = {"package": sdist, "versions": ["0.3.35"]}
    else:
        engine["repo"] = repo
    return {"cell_id": "c1", "engine": engine, "ref": {"name": "r", "kind": kind, "value": value}, "gpus": gpus}


def owner(**kw) -> OwnerPolicy:
    return OwnerPolicy(**{"repos": [LLAMA, "pypi:llama-cpp-python"], "idle": IdlePolicy(max_load_per_core=None,
                       pause_when_users_logged_in=False), **kw})


# ---------------------------------------------------------------- windows

def test_a_same_day_window_admits_times_inside_it_only():
    pol = owner(windows=["09:00-17:30"])
    assert P.window_problem(pol, at(1, 9, 0)) is None
    assert P.window_problem(pol, at(1, 17, 29)) is None
    assert P.window_problem(pol, at(1, 17, 30)) == \
        "outside the owner's windows (09:00-17:30); next in 15 h 30 min"
    assert P.window_problem(pol, at(1, 8, 59)).endswith("next in 1 min")


def test_a_window_crossing_midnight_admits_both_sides_of_it():
    pol = owner(windows=["22:00-07:00"])
    assert P.window_problem(pol, at(1, 23, 0)) is None
    assert P.window_problem(pol, at(2, 3, 0)) is None
    assert P.window_problem(pol, at(1, 7, 0)) is not None
    assert P.window_problem(pol, at(1, 18, 50)) == \
        "outside the owner's windows (22:00-07:00); next in 3 h 10 min"


def test_a_windows_days_name_the_day_it_starts_on():
    pol = owner(windows=["Mon-Fri 22:00-07:00"])
    assert P.window_problem(pol, at(3, 23)) is None          # Friday night
    assert P.window_problem(pol, at(4, 3)) is None           # Saturday 03:00: Friday's window
    assert P.window_problem(pol, at(4, 23)) is not None      # Saturday night
    assert P.window_problem(pol, at(6, 3)) is not None       # Monday 03:00: Sunday had none
    assert P.window_problem(pol, at(4, 8)).endswith("next in 2 d 14 h")   # Sat 08:00 -> Mon 22:00
    weekend = owner(windows=["Sat,Sun 00:00-24:00"])
    assert P.window_problem(weekend, at(5, 23, 59)) is None
    assert P.window_problem(weekend, at(6, 0, 0)) is not None
    assert P.window_problem(weekend, at(3, 12)).endswith("next in 12 h")
    wrap = P.parse_window("Fri-Mon 10:00-11:00")
    assert wrap.days == {4, 5, 6, 0}


def test_no_windows_means_any_time():
    assert P.window_problem(owner(), at(1, 3)) is None


def test_a_timezone_aware_now_is_taken_in_local_time():
    pol = owner(windows=["00:00-24:00"])
    assert P.window_problem(pol, datetime.now().astimezone()) is None


@pytest.mark.parametrize("text", ["25:00-07:00", "22:00-07:60", "22:00", "Mon-Fry 22:00-07:00",
                                  "07:00-07:00", "00:00-24:01", "x 1:00-2:00"])
def test_a_malformed_window_is_refused_with_why(text):
    with pytest.raises(ValueError):
        P.parse_window(text)
    with pytest.raises(ValueError):
        owner(windows=[text])


# ---------------------------------------------------------------- sources and refusal

def test_one_repo_written_differently_is_one_allowed_source():
    assert source_id({"repo": "https://GitHub.com/ggml-org/llama.cpp.git/"}) == LLAMA
    assert source_id({"repo": "https://user:tok@github.com/ggml-org/llama.cpp"}) == LLAMA
    assert source_id({"repo": "git@GitHub.com:ggml-org/llama.cpp.git"}) == "git@github.com:ggml-org/llama.cpp"
    assert source_id({"sdist": {"package": "Llama_CPP.python", "versions": []}}) == "pypi:llama-cpp-python"
    assert source_id({"repo": "/tmp/x/../y"}) == "file:///tmp/y"
    assert OwnerPolicy(repos=["https://GitHub.com/ggml-org/llama.cpp.git/"]).repos == [LLAMA]
    with pytest.raises(ValueError):
        source_id({"name": "neither"})


def test_disallowed_repos_packages_fork_prs_and_gpu_counts_are_refused_with_why():
    pol = owner()
    assert refusal(pol, spec()) is None
    assert refusal(pol, spec(repo="https://GitHub.com/ggml-org/llama.cpp.git/")) is None
    assert refusal(pol, spec(sdist="llama-cpp-python")) is None
    assert refusal(pol, spec(repo="https://github.com/evil/llama.cpp")) == \
        "source https://github.com/evil/llama.cpp is not in the owner's allowed repos"
    assert "pypi:ik-llama-cpp-python is not in" in refusal(pol, spec(sdist="ik-llama-cpp-python"))
    assert "fork PRs" in refusal(pol, spec(kind="pr", value="1234"))
    assert "fork PRs" in refusal(pol, spec(kind="ref", value="refs/pull/1234/head"))
    assert refusal(owner(allow_fork_prs=True), spec(kind="pr", value="1234")) is None
    assert refusal(pol, spec(gpus=1)) == "needs 1 GPU, the owner allows 0"
    assert refusal(owner(gpus=2), spec(gpus=3)) == "needs 3 GPUs, the owner allows 2"
    assert refusal(owner(gpus=2), spec(gpus=2)) is None
    assert refusal(pol, spec(gpus=0)) is None
    assert refusal(pol, spec(gpus=None)) is None


@pytest.mark.parametrize("bad", [None, [], {}, {"engine": "x"}, {"engine": {"repo": 3}},
                                 {"engine": {"sdist": {"versions": []}}},
                                 {**spec(), "ref": None}, {**spec(), "ref": {"kind": "pr"}},
                                 {**spec(), "gpus": "2"}, {**spec(), "gpus": True}, {**spec(), "gpus": -1}])
def test_a_malformed_spec_is_refused_never_raises(bad):
    reason = refusal(owner(allow_fork_prs=True, gpus=8), bad)
    assert isinstance(reason, str) and reason


def test_the_coordinators_terms_check_and_the_agents_refusal_agree():
    policies = [owner(), owner(allow_fork_prs=True, gpus=1), OwnerPolicy(repos=["pypi:llama-cpp-python"])]
    specs = [spec(), spec(sdist="llama-cpp-python"), spec(repo="https://example.org/x"), spec(kind="pr", value="7"),
             spec(gpus=1), spec(gpus=2), {"engine": None}]
    for pol in policies:
        terms = json.loads(json.dumps(lease_terms(pol)))          # as it travels to the coordinator
        assert terms.keys() == {"repos", "allow_fork_prs", "max_gpus"}
        for s in specs:
            assert terms_allow(terms, s) == refusal(pol, s)
    assert terms_allow({"repos": "x"}, spec()).startswith("malformed lease terms")
    assert terms_allow({"repos": ["https://GITHUB.com/ggml-org/llama.cpp.git"]}, spec()) is None


# ---------------------------------------------------------------- ledger

def test_the_hours_ledger_splits_work_across_midnight_and_keeps_8_days(tmp_path):
    ledger = Ledger(tmp_path / "sub" / "ledger.json")
    assert ledger.used_today(at(1, 12)) == 0
    ledger.add(3600, at(1, 12))
    ledger.add(1800, at(1, 13))
    assert ledger.used_today(at(1, 20)) == 5400
    assert ledger.used_today(at(2, 1)) == 0
    ledger.add(7200, at(2, 1))          # 23:00-01:00: one hour on each day
    assert ledger.used_today(at(2, 2)) == 3600
    assert ledger.used_today(at(1, 23, 59)) == 9000
    ledger.add(60, at(20, 12))          # much later: old days are dropped
    days = json.loads(ledger.path.read_text())["days"]
    assert list(days) == ["2024-05-20"]


def test_a_corrupt_or_missing_hours_ledger_starts_over(tmp_path):
    path = tmp_path / "ledger.json"
    for junk in ["{not json", "[1, 2]", '{"days": {"yesterday": 5}}', '{"days": 3}', ""]:
        path.write_text(junk)
        ledger = Ledger(path)
        assert ledger.used_today(at(1, 12)) == 0
        ledger.add(10, at(1, 12))
        assert ledger.used_today(at(1, 12)) == 10


def test_the_agent_pauses_once_todays_hours_are_used(tmp_path):
    pol = owner(max_hours_per_day=1)
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.add(3000, at(1, 10))
    assert pause_reason(pol, ledger, tmp_path, at(1, 11)) is None
    ledger.add(700, at(1, 11))
    assert pause_reason(pol, ledger, tmp_path, at(1, 12)) == "the owner's 1 h a day are used (1 h 2 min today)"
    assert pause_reason(pol, ledger, tmp_path, at(2, 0, 30)) is None


# ---------------------------------------------------------------- idle

def test_load_above_the_owners_limit_pauses(monkeypatch):
    monkeypatch.setattr(P.psutil, "getloadavg", lambda: (0.25 * (os.cpu_count() or 1), 0.0, 0.0))
    assert idle_problem(IdlePolicy(max_load_per_core=0.0, pause_when_users_logged_in=False)) == \
        "load 0.25 per core is above 0"
    assert idle_problem(IdlePolicy(max_load_per_core=1e9, pause_when_users_logged_in=False)) is None
    assert idle_problem(IdlePolicy(max_load_per_core=None, pause_when_users_logged_in=False)) is None


def test_the_real_load_is_read_and_compared():
    # A running test process keeps the real load above 0 only sometimes, so 0.0 (always
    # "at or above") is the threshold that always reports.
    assert idle_problem(IdlePolicy(max_load_per_core=0.0, pause_when_users_logged_in=False)).startswith("load ")
    assert idle_problem(IdlePolicy(max_load_per_core=1e9, pause_when_users_logged_in=False)) is None


def test_logged_in_users_pause_but_the_agents_own_terminal_does_not(monkeypatch):
    User = namedtuple("User", "name terminal host started pid")
    users = [User("alice", "pts/0", "10.0.0.2", 0.0, 1), User("bob", "tty1", "", 0.0, 2)]
    monkeypatch.setattr(P.psutil, "users", lambda: users)
    monkeypatch.setattr(P, "_own_terminals", lambda: set())
    idle = IdlePolicy(max_load_per_core=None)
    assert idle_problem(idle) == "2 users logged in (alice on pts/0, bob on tty1)"
    monkeypatch.setattr(P, "_own_terminals", lambda: {"pts/0"})
    assert idle_problem(idle) == "1 user logged in (bob on tty1)"
    assert idle_problem(IdlePolicy(max_load_per_core=None, pause_when_users_logged_in=False)) is None


# ---------------------------------------------------------------- disk

def _file(path: Path, size: int, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def _entry(dir_: Path, size: int, age_days: float) -> Path:
    _file(dir_ / "blob", size, age_days)
    stamp = time.time() - age_days * 86400
    os.utime(dir_, (stamp, stamp))
    return dir_


def test_pruning_removes_least_recently_used_first_and_keeps_locked_and_recent_entries(tmp_path):
    root = tmp_path / "cache"
    old_build = _entry(root / "builds" / "aaa", 1000, 10)
    locked_build = _entry(root / "builds" / "bbb", 1000, 20)          # oldest, but in use
    (root / "builds" / "bbb.lock").touch()
    os.utime(root / "builds" / "bbb.lock", (time.time() - 20 * 86400,) * 2)
    new_build = _entry(root / "builds" / "ccc", 1000, 0)
    old_model = _file(root / "models" / "quantized" / "m-Q8_0.gguf", 1000, 5)
    new_model = _file(root / "models" / "tiny.gguf", 1000, 0)
    sandboxed = _entry(root / "sandboxed" / "builds" / "ddd", 1000, 8)
    sandboxed_model = _file(root / "sandboxed" / "models" / "quantized" / "s-Q8_0.gguf", 1000, 9)
    old_work = _entry(root / "work" / "cell-1", 1000, 3)
    locked_model = _file(root / "models" / "quantized" / "m-Q4_0.gguf", 1000, 40)   # lock: m-Q4_0.lock
    _file(root / "repos" / "mirror" / "pack", 1000, 30)                  # never pruned
    assert P.cache_size(root) == 10000

    with open(root / "builds" / "bbb.lock", "a+") as one, \
            open(root / "models" / "quantized" / "m-Q4_0.lock", "a+") as two:
        fcntl.flock(one, fcntl.LOCK_EX)
        fcntl.flock(two, fcntl.LOCK_EX)
        removed = prune(root, 4500)
    # least recently used first until under 4500 bytes; locked ones are skipped
    assert set(removed) == {old_build, sandboxed, sandboxed_model, old_model, old_work}
    assert locked_build.exists() and locked_model.exists() and new_build.exists() and new_model.exists()
    assert (root / "repos" / "mirror" / "pack").exists()
    assert P.cache_size(root) == 5000
    assert locked_build in prune(root, 4500)          # unlocked now: it goes


def test_pruning_stops_once_under_the_limit(tmp_path):
    root = tmp_path / "cache"
    oldest = _entry(root / "builds" / "a", 1000, 30)
    older = _entry(root / "builds" / "b", 1000, 20)
    _entry(root / "builds" / "c", 1000, 10)
    assert prune(root, 2000) == [oldest]
    assert older.exists()
    assert prune(root, 5000) == []


def test_a_cache_still_over_the_limit_after_pruning_pauses(tmp_path):
    root = tmp_path / "cache"
    _entry(root / "builds" / "old", 2000, 10)
    _entry(root / "builds" / "new", 2000, 0)
    assert disk_problem(owner(), root) is None                             # no limit
    assert disk_problem(owner(max_disk_gb=3000 / 1e9), root) is None       # pruned "old"
    assert not (root / "builds" / "old").exists()
    problem = disk_problem(owner(max_disk_gb=1000 / 1e9), root)           # "new" is in recent use
    assert problem.startswith(f"the cache {root} holds 0.00 GB, above the owner's")
    assert (root / "builds" / "new").exists()
    pol = owner(max_disk_gb=1000 / 1e9)
    assert pause_reason(pol, None, root, at(1, 12)) == problem


def test_pause_reasons_come_in_order_windows_hours_idle_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(P.psutil, "getloadavg", lambda: (1e6, 0.0, 0.0))
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.add(7200, at(1, 12))
    pol = owner(windows=["Wed 13:00-14:00"], max_hours_per_day=1, idle=IdlePolicy())
    assert pause_reason(pol, ledger, tmp_path, at(1, 12)).startswith("outside the owner's windows")
    assert pause_reason(pol, ledger, tmp_path, at(1, 13)).startswith("the owner's 1 h a day")
    assert pause_reason(pol, Ledger(tmp_path / "other.json"), tmp_path, at(1, 13)).startswith("load ")


# ---------------------------------------------------------------- loading

def _load(tmp_path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message[len(str(path)):]


def test_a_bad_policy_file_names_file_line_and_key(tmp_path):
    base = f"repos:\n  - {LLAMA}\n"
    assert _load(tmp_path, base + "gpus: 1\nfoo: 2\n").startswith(":4: foo: unknown key (allowed: repos,")
    assert _load(tmp_path, base + "idle:\n  max_load: 1\n").startswith(":4: idle.max_load: unknown key")
    assert _load(tmp_path, base + "windows:\n  - Mon-Fri 22:00-07:00\n  - 25:00-07:00\n") == \
        ":5: windows[1]: bad start time '25:00' (hours 00-23)"
    assert _load(tmp_path, base + "gpus: two\n") == ":3: gpus: Input should be a valid integer, got str 'two'"
    assert _load(tmp_path, base + "allow_fork_prs: 1\n").startswith(":3: allow_fork_prs: ")
    assert _load(tmp_path, "gpus: 1\n") == ":1: repos: required key is missing"
    assert _load(tmp_path, "repos: []\n") == ":1: repos: must list at least one entry"
    assert _load(tmp_path, "repos:\n  - github.com/x\n").startswith(":2: repos[0]: 'github.com/x' is not a git URL")
    assert _load(tmp_path, base + "gpus: 1\ngpus: 2\n") == ":4: gpus: duplicate key (first given on line 3)"
    assert _load(tmp_path, "repos: [a\n").startswith(":2: YAML syntax error")
    assert _load(tmp_path, "- a\n") == ":1: the policy must be a mapping of keys, not a list"
    assert _load(tmp_path, "") == ": the policy is empty; at least 'repos' is required"
    assert _load(tmp_path, base + "gpus: -1\nmax_disk_gb: 0\n").endswith("(and 1 more problem)")
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=r"nope\.yaml: cannot read"):
        load_policy(missing)


def test_the_example_policy_loads():
    pol = load_policy(REPO / "matrices" / "volunteer-policy.example.yaml")
    assert LLAMA in pol.repos and "pypi:llama-cpp-python" in pol.repos
    assert pol.gpus == 0 and not pol.allow_fork_prs and pol.windows
    assert set(OwnerPolicy.model_fields) <= set(pol.model_fields_set)       # every key shown
    assert set(IdlePolicy.model_fields) <= set(pol.idle.model_fields_set)
    text = (REPO / "matrices" / "volunteer-policy.example.yaml").read_text()
    for key in list(OwnerPolicy.model_fields) + list(IdlePolicy.model_fields):
        assert f"#   {key}" in text or f"#     {key}" in text, f"{key} is not documented"
    # Monday 03:00 is Sunday night's window; Wednesday noon is not
    assert P.window_problem(pol, at(6, 3)) is None
    assert P.window_problem(pol, at(1, 12)) is not None
