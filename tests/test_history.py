"""A series' history (#15): change points found with ruptures and kept on a Welch test, their
cause told by a control re-measured in the same runs, hardware and build changes marked on
the point where they happened, and the `hwmatrix history` command on a real file store.
Records are synthetic, in the stored shape; no engine runs."""
from __future__ import annotations

import hashlib
import json
import random

from agent.spec.record import Metric, ResultRecord
from agent.store.backends import open_store
from agent.store.keys import result_key
from coordinator.cli.main import main
from coordinator.reports.history_text import render
from coordinator.results.history import SeriesKey, find_changes, history, series_keys

PARAMS = {"quant": "Q4_0", "threads": 8}
HW = {"hostname": "box1", "cpu": {"brand": "AMD Ryzen 9 7950X", "microcode": "0xa601203"},
      "os": {"kernel": "6.1.0"}, "gpus": {"count": 0, "devices": []}}
KEY = SeriesKey("zen4", PARAMS, "tg_tps")


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _record(run: int, ref: str, level: float, rng: random.Random, noise: float = 0.03, *, hardware=None,
            build_flags=None, origin="measured", hw_class="zen4", params=PARAMS, commit=None) -> dict:
    """One record of run ``run``: 4 engine processes x 2 repetitions around ``level``; the
    engine commit is the ref's unless given (a moving ref gets a new one each run)."""
    procs = [level * rng.gauss(1, noise) for _ in range(4)]
    samples = [p * rng.gauss(1, 0.002) for p in procs for _ in range(2)]
    return ResultRecord(run_id=f"run{run:03d}", matrix={"name": "m", "hash": "h"}, cell_id=f"c-{ref}",
                        agent_id="agent-1", params={"ref": ref, **params}, status="ok", origin=origin,
                        hardware_class=hw_class, hardware=hardware or HW,
                        engine={"kind": "llama.cpp", "commit": commit or _sha(ref),
                                "build_flags": build_flags or ["-DGGML_NATIVE=ON"]},
                        metrics={"tg_tps": Metric.from_samples("tg16", samples, process_sizes=[2] * 4)},
                        timestamps={"started": f"2026-01-01T00:{run:02d}:00",
                                    "finished": f"2026-01-01T00:{run:02d}:30"}).model_dump(mode="json")


def _step_series(seed: int, n: int = 20, at: int = 12, step: float = 0.8, noise: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    return [_record(i, f"master{i}", 50.0 * (step if i >= at else 1.0), rng, noise) for i in range(n)]


def _with_control(seed: int, candidate_step: float, control_step: float, n: int = 20, at: int = 12):
    """Each run measures master at that run's commit and the fixed control b6000."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(_record(i, "b6000", 40.0 * (control_step if i >= at else 1.0), rng, 0.02))
        out.append(_record(i, "master", 50.0 * (candidate_step if i >= at else 1.0), rng, 0.02,
                           commit=_sha(f"master{i}")))
    return out


def test_a_20_percent_step_at_point_12_is_one_change_there_of_unknown_cause_without_a_control():
    h = history(_step_series(seed=1), KEY)
    assert h.control is None and len(h.points) == 20
    assert [(c.index, c.on, c.cause) for c in h.changes] == [(12, "value", "unknown")]
    assert -23 < h.changes[0].change_pct < -17 and h.changes[0].p_value < 0.01
    assert "cannot tell code from host" in h.changes[0].note


def test_find_changes_plants_a_step_in_plain_values_and_finds_it_in_every_seed():
    for seed in range(50):
        rng = random.Random(seed)
        values = [100 * rng.gauss(1, 0.03) * (0.8 if i >= 12 else 1) for i in range(20)]
        assert [f.index for f in find_changes(values)] == [12], seed


def test_a_flat_series_with_3_percent_noise_raises_almost_no_false_alarms():
    # measured: 0 of 50 for both (points of 3%-noise processes, and raw 3%-noise values);
    # 2 of 200 seeds for the raw values
    alarms = sum(bool(history(_step_series(seed, step=1.0), KEY).changes) for seed in range(50))
    assert alarms <= 2
    raw = 0
    for seed in range(50):
        rng = random.Random(seed)
        raw += bool(find_changes([100 * rng.gauss(1, 0.03) for _ in range(20)]))
    assert raw <= 2


def test_a_step_the_control_shares_is_the_hosts_and_a_step_only_relative_to_it_is_the_codes():
    host = history(_with_control(3, candidate_step=0.8, control_step=0.8), KEY)
    assert host.control == "b6000"
    assert [(c.on, c.cause) for c in host.changes] == [("value", "host")]
    assert "b6000 moved too" in host.changes[0].note
    assert host.points[host.changes[0].index].ref == "master" and host.points[host.changes[0].index].run_id == "run012"

    code = history(_with_control(3, candidate_step=0.8, control_step=1.0), KEY)
    assert [(c.on, c.cause) for c in code.changes] == [("relative", "code")]
    first_after = code.points[code.changes[0].index]
    assert first_after.run_id == "run012" and first_after.ref == "master"
    assert 0.75 < first_after.relative / code.points[0 if code.points[0].ref == "master" else 1].relative < 0.85


def test_the_control_is_the_ref_re_measured_at_one_commit_beside_another_and_can_be_named():
    recs = _with_control(4, 1.0, 1.0, n=6)
    assert history(recs, KEY).control == "b6000"      # master was measured as often, at six commits
    assert history(recs, KEY, control="master").control == "master"
    assert history(_step_series(4), KEY).control is None     # every ref once: nothing re-measured


def test_a_kernel_update_and_a_build_flag_change_are_marked_on_the_point_they_first_appear():
    rng = random.Random(5)
    newer = {**HW, "hostname": "box2", "os": {"kernel": "6.8.0"}}
    recs = [_record(i, f"m{i}", 50, rng, hardware=newer if i >= 3 else {**HW, "hostname": f"h{i}"},
                    build_flags=["-DGGML_NATIVE=ON", "-DGGML_AVX512=ON"] if i >= 5 else None) for i in range(8)]
    h = history(recs, KEY)
    assert [p.index for p in h.points if p.hardware_change] == [3]
    assert h.points[3].hardware_change == "os.kernel 6.1.0 -> 6.8.0"        # hostname ignored
    assert [p.index for p in h.points if p.build_change] == [5]
    assert h.points[5].build_change == ("engine.build_flags -DGGML_NATIVE=ON -> "
                                        "-DGGML_NATIVE=ON -DGGML_AVX512=ON")
    text = render(h)
    assert "hw: os.kernel 6.1.0 -> 6.8.0" in text and "build: engine.build_flags" in text


def test_imported_points_are_shown_but_a_wild_imported_value_is_no_change():
    recs = _step_series(6, step=1.0)
    rng = random.Random(0)
    recs[10:10] = [_record(10, "posted", 20.0, rng, origin="imported"), _record(10, "posted2", 21.0, rng,
                                                                                 origin="imported")]
    h = history(recs, KEY)
    assert sum(p.imported for p in h.points) == 2 and h.changes == []
    assert render(h).count("imported") >= 2


def test_commit_mode_pools_each_ref_over_runs_in_first_measured_order():
    rng = random.Random(7)
    recs = [_record(run, ref, 50.0, rng) for run, ref in ((0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "b"))]
    h = history(recs, KEY, x="commit")
    assert [(p.ref, p.processes, p.runs) for p in h.points] == [("a", 8, 2), ("b", 8, 2), ("c", 4, 1)]
    moving = history(_with_control(7, 1.0, 1.0, n=4), KEY, x="commit")     # master at four commits
    assert [(p.ref, p.runs) for p in moving.points] == [("b6000", 4)] + [("master", 1)] * 4
    assert [p.commit for p in moving.points[1:]] == [_sha(f"master{i}")[:12] for i in range(4)]


def test_series_keys_are_per_class_params_and_metric_with_two_points_or_more_and_slugs_are_stable():
    rng = random.Random(8)
    recs = _step_series(8, n=3) + [_record(0, "x", 5, rng, params={"quant": "Q8_0", "threads": 8})]
    recs += [_record(i, "x", 5, rng, hw_class="zen3") for i in range(2)]
    keys = series_keys(recs)
    assert [(k.hw_class, k.params, k.metric) for k in keys] == [("zen3", PARAMS, "tg_tps"), ("zen4", PARAMS, "tg_tps")]
    assert keys[1].slug() == SeriesKey("zen4", dict(reversed(PARAMS.items())), "tg_tps").slug()
    assert len(keys[1].slug()) == 12 and keys[0].slug() != keys[1].slug()


def test_the_method_says_how_to_reproduce_the_changes_and_long_series_use_binseg():
    h = history(_step_series(9), KEY)
    assert {"library", "version", "algorithm", "cost", "penalty", "min_size", "p_threshold",
            "min_change_pct"} <= set(h.method)
    assert h.method["series"]["value"]["algorithm"] == "Pelt"
    rng = random.Random(9)
    values = [100 * rng.gauss(1, 0.03) * (0.9 if i >= 3000 else 1) for i in range(10_000)]
    assert [f.index for f in find_changes(values)] == [3000]


def _store(tmp_path, recs):
    store = open_store("file://" + str(tmp_path / "store"))
    for rec in recs:
        store.put(result_key(rec["run_id"], rec["cell_id"], rec["agent_id"]), json.dumps(rec).encode())
    return store


def test_hwmatrix_history_prints_the_one_series_selected(tmp_path, capsys):
    store = _store(tmp_path, _step_series(1))
    assert main(["history", "--store", store.url, "--metric", "tg_tps"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("zen4 quant=Q4_0 threads=8 tg_tps  (x: date, control: none, 20 points, 1 change(s))")
    assert "CHANGE -" in out and "unknown" in out and "ruptures 1.1" in out


def test_hwmatrix_history_lists_several_series_with_their_flags_and_exits_2(tmp_path, capsys):
    rng = random.Random(2)
    other = {"quant": "Q8_0", "threads": 8}
    store = _store(tmp_path, _step_series(1, n=3) + [_record(i, "x", 5, rng, params=other) for i in range(2)])
    assert main(["history", "--store", store.url]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines == ["zen4 quant=Q4_0 threads=8 tg_tps: --class zen4 --metric tg_tps --param quant=Q4_0 "
                     "--param threads=8",
                     "zen4 quant=Q8_0 threads=8 tg_tps: --class zen4 --metric tg_tps --param quant=Q8_0 "
                     "--param threads=8"]
    assert "2 series match" in captured.err
    assert main(["history", "--store", store.url, "--param", "quant=Q8_0"]) == 0
    assert main(["history", "--store", store.url, "--class", "nope"]) == 2
    assert "no series" in capsys.readouterr().err


def test_hwmatrix_history_param_matches_a_stored_bool_written_false_or_off(tmp_path, capsys):
    rng = random.Random(3)
    store = _store(tmp_path, [_record(i, f"x-{rtr}", 5, rng, params={"quant": "Q4_0", "rtr": rtr})
                              for i in range(3) for rtr in (False, True)])      # one cell per rtr
    for spelling in ("rtr=false", "rtr=False", "rtr=off"):
        assert main(["history", "--store", store.url, "--param", spelling]) == 0, spelling
        assert capsys.readouterr().out.startswith("zen4 quant=Q4_0 rtr=")
