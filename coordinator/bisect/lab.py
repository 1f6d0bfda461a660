"""The real lab behind the search: builds and measurements of a bisect's commits, on one
machine, through the normal pipeline, with every answer journaled in the store.

Each question is asked once per bisect: a build (code hash, or why it fails) and a
measurement (an interleaved group, `until: verdict`, run as a run of its own whose id derives
from the bisect id and the commits) are written to ``bisects/<id>/journal.json`` as soon as
they are answered. Running the same bisect again reads the answers back (the search is
deterministic given them), so finished steps are neither rebuilt nor remeasured.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field

import yaml

from agent.paths import cache_dir
from agent.store.keys import StoreError, key_part
from coordinator.bisect.search import Measured, PairVerdict

# "same" at a step means the half holds less than this share of the ends' change.
MARGIN_SHARE = 1 / 3
MARGIN_PCT = (2.0, 10.0)       # ... within these bounds (percent)


def margin_pct(effect: float | None) -> float | None:
    """How close counts as "same" while narrowing down a change of ratio ``effect``: a third
    of it, within 2-10% (None, the ends: the default 2%)."""
    if not effect:
        return None
    return round(min(MARGIN_PCT[1], max(MARGIN_PCT[0], abs(1 - effect) * 100 * MARGIN_SHARE)), 2)


def journal_key(bisect_id: str) -> str:
    return f"bisects/{key_part(bisect_id)}/journal.json"


def read_journal(store, bisect_id: str) -> dict | None:
    try:
        if not store.exists(journal_key(bisect_id)):
            return None
        return json.loads(store.get(journal_key(bisect_id)))
    except (StoreError, ValueError):
        return None


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class Setup:
    """What a bisect measures: the matrix every step is made from (engines, models, args,
    hygiene, hardware, and one value per axis other than ref), the engine whose commits are
    searched, and the question."""
    base: dict
    engine: str
    commits: list                    # agent.engine.sources.CommitInfo, index 0 = good
    metric: str = "tg_tps"
    find: str = "slower"
    min_processes: int = 3
    max_processes: int = 20
    hw_class: str | None = None
    address: str | None = None
    token_file: str | None = None
    inputs: dict = field(default_factory=dict)   # what the bisect id is made of, for the journal

    def bisect_id(self) -> str:
        return "bisect-" + _digest({"base": self.base, "engine": self.engine, "good": self.commits[0].sha,
                                    "bad": self.commits[-1].sha, "metric": self.metric, "find": self.find,
                                    "processes": [self.min_processes, self.max_processes],
                                    "class": self.hw_class})[:12]


class StoreLab:
    """Builds and measures through coordinator.cluster.run.execute, on one agent."""

    def __init__(self, setup: Setup, store, store_url: str, bisect_id: str, say=None):
        self.setup, self.store, self.store_url, self.bisect_id = setup, store, store_url, bisect_id
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.journal = read_journal(store, bisect_id) or {
            "bisect_id": bisect_id, "inputs": setup.inputs, "metric": setup.metric, "find": setup.find,
            "commits": [{"sha": c.sha, "subject": c.subject, "date": c.date} for c in setup.commits],
            "host": None, "hw_class": setup.hw_class, "codes": {}, "measures": {}, "pinned_model": None,
            "started": time.time(), "result": None}
        self.folder = cache_dir("bisects", bisect_id)
        self.replayed = {"builds": 0, "measures": 0}

    # ---------------------------------------------------------------- journal

    def save(self) -> None:
        self.store.put(journal_key(self.bisect_id), json.dumps(self.journal, indent=1).encode(), on_clash="replace")

    def sha(self, i: int) -> str:
        return self.setup.commits[i].sha

    def ref_name(self, i: int) -> str:
        return f"c{i}-{self.sha(i)[:10]}"

    # ---------------------------------------------------------------- machine

    def _connect(self) -> None:
        if self.setup.address:          # joins once: connect() returns when Ray is up already
            from coordinator.cluster.head import connect

            connect(self.setup.address, self.setup.token_file)

    def host(self) -> str:
        """The agent every step runs on: the journal's, or the first of the class (by name)."""
        if self.journal["host"]:
            return self.journal["host"]
        self._connect()
        from coordinator.cluster.run import pick_agent

        chosen = pick_agent(self.setup.address, self.setup.hw_class)
        self.journal["host"], self.journal["hw_class"] = chosen.host, chosen.hw_class
        self.journal["node_id"] = chosen.node_id
        self.save()
        self.say(f"bisect {self.bisect_id}: every step on {chosen.host} ({chosen.hw_class})")
        return chosen.host

    # ---------------------------------------------------------------- matrices

    def matrix(self, commits: list[int], pairs: list[tuple[int, int]], margin: float | None) -> dict:
        base = json.loads(json.dumps(self.setup.base))
        pinned = self.journal["pinned_model"]
        axes = dict(base.pop("matrix", {}))
        if pinned:                       # every step after the ends loads the good end's file
            base["models"] = {pinned["name"]: {"path": pinned["path"], "sha256": pinned["sha256"]}}
            axes.pop("quant", None)
            axes.pop("model", None)
        reps = dict(base.get("repetitions") or {}) if isinstance(base.get("repetitions"), dict) else {}
        reps.update(min=self.setup.min_processes, max=self.setup.max_processes, until="verdict")
        reps.pop("target_ci_pct", None)
        if not pairs:                    # a build, measured by nothing
            reps.pop("until")
        if margin is not None:
            reps["equivalence_pct"] = margin
        hardware = dict(base.get("hardware") or {})
        hardware["per"] = "machine"
        axes["ref"] = [{"name": self.ref_name(i), "engine": self.setup.engine, "commit": self.sha(i)} for i in commits]
        matrix = {**base, "name": self.bisect_id, "repetitions": reps, "hardware": hardware, "matrix": axes}
        if pairs:
            matrix["compare"] = [{"baseline": {"ref": self.ref_name(a)}, "candidate": {"ref": self.ref_name(b)},
                                  "metrics": [self.setup.metric]} for a, b in pairs]
        return matrix

    def _write(self, name: str, matrix: dict) -> str:
        path = self.folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(matrix, sort_keys=False))
        return str(path)

    # ---------------------------------------------------------------- the Lab protocol

    def code(self, i: int) -> tuple[str | None, str | None]:
        known = self.journal["codes"].get(self.sha(i))
        if known is not None:
            self.replayed["builds"] += 1
            return known["code"], known["why"]
        host = self.host()
        started = time.monotonic()
        self.say(f"  build {self.ref_name(i)} {self.setup.commits[i].subject[:60]!r}")
        from coordinator.planning.plan import build_targets, load_plan

        path = self._write(f"build-{self.sha(i)[:12]}", self.matrix([i], [], None))
        plan = load_plan(path)
        cell = plan.cells[0]
        spec = cell.to_spec(f"{self.bisect_id}-build", self.store_url, build_targets(plan.cells)[cell.build_order])
        answer = self._build(spec, host)
        ok = answer["status"] == "ok"
        why = None if ok else f"{answer['status']}: {(answer.get('error') or '')[:300]}"
        code = (answer.get("code_hash") or answer.get("binary_hash")) if ok else None
        self.journal["codes"][self.sha(i)] = {"code": code, "why": why, "cached": answer.get("cached"),
                                              "seconds": round(time.monotonic() - started, 1),
                                              "log_tail": None if ok else answer.get("log_tail", "")[-2000:]}
        self.save()
        return code, why

    def _build(self, spec, host: str) -> dict:
        if not self.setup.address:
            from agent.engine.pipeline import build_only

            return build_only(spec)
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from agent.cluster.worker import build_group

        node = self.journal.get("node_id")
        task = build_group.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        return ray.get(task.remote([spec.model_dump_json()]))[0]

    def measure(self, commits: list[int], pairs: list[tuple[int, int]], purpose: str,
                effect: float | None = None) -> Measured:
        margin = margin_pct(effect)
        key = _digest({"commits": [self.sha(i) for i in commits], "margin": margin,
                       "pairs": [[self.sha(a), self.sha(b)] for a, b in pairs]})[:10]
        known = self.journal["measures"].get(key)
        if known is None:
            known = self._run(key, commits, pairs, purpose, margin)
        else:
            self.replayed["measures"] += 1
        if purpose == "ends":
            self._after_ends(known)
        return Measured(verdicts={tuple(p): PairVerdict(**v) for p, v in zip(known["pairs"], known["verdicts"])
                                  if v is not None},
                        processes=known["processes"], failed={int(k): v for k, v in known["failed"].items()})

    def _run(self, key: str, commits: list[int], pairs: list[tuple[int, int]], purpose: str,
             margin: float | None) -> dict:
        from coordinator.cluster.run import execute
        from coordinator.results.compare import comparisons

        host = self.host()
        names = {self.ref_name(i): i for i in commits}
        self.say(f"  measure ({purpose}) " + " ".join(names) + (f", same = within ±{margin:.1f}%" if margin else ""))
        started = time.monotonic()
        path = self._write(f"{purpose}-{key}", self.matrix(commits, pairs, margin))
        self._connect()
        _, run_id, records, _, _ = execute(path, self.store_url, f"{self.bisect_id}-{key}", fresh=False,
                                           skip_unmatched=False, address=self.setup.address,
                                           token_file=self.setup.token_file, host=host)
        flat = [r for recs in records.values() for r in recs]
        failed = {names[r["params"]["ref"]]: f"{r.get('status')}: {(r.get('error') or '')[:300]}"
                  for r in flat if r.get("status") != "ok" and r["params"].get("ref") in names}
        verdicts = []
        for a, b in pairs:
            rows = comparisons(flat, {"ref": self.ref_name(a)}, {"ref": self.ref_name(b)}, metrics=[self.setup.metric])
            if not rows:
                verdicts.append(None)
                continue
            row = rows[0]
            verdict = "same" if row["verdict"] == "same binary" else row["verdict"]
            verdicts.append({"verdict": verdict, "ratio": row["ratio"], "ci_low": row["ci_low"],
                             "ci_high": row["ci_high"], "pairs": row.get("n_cand") or 0})
        processes = sum((r.get("repetitions") or {}).get("processes") or 0 for r in flat)
        answer = {"purpose": purpose, "run_id": run_id, "commits": commits, "pairs": [list(p) for p in pairs],
                  "verdicts": verdicts, "processes": processes, "failed": {str(k): v for k, v in failed.items()},
                  "seconds": round(time.monotonic() - started, 1),
                  "models": {r["params"]["ref"]: r.get("model") for r in flat if r.get("status") == "ok"}}
        self.journal["measures"][key] = answer
        self.save()
        return answer

    def _after_ends(self, answer: dict) -> None:
        """The model file every step after the ends loads: the good end's."""
        good = answer.get("models", {}).get(self.ref_name(0))
        if good and good.get("path") and good.get("sha256") and self.journal["pinned_model"] is None:
            self.journal["pinned_model"] = {"name": good.get("name") or "model", "path": good["path"],
                                            "sha256": good["sha256"], "quant": good.get("quant")}
        self.save()
