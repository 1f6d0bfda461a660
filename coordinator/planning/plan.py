"""Planning: a validated matrix becomes concrete cells, each with its build and its spec.

Axes split three ways - build (ref + cmake flags), model (model, quant), run (everything
else) - and cells are ordered by build so each build happens once per agent. Each (model,
quant) is quantized by one build, chosen here, so the refs and engines measuring it load
the same bytes (``quantize_with: each`` gives every build its own).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from agent.spec import cellspec as spec_types
from agent.engine.build import cmake_option, needs_cuda
from coordinator.errors import UserError
from coordinator.matrix.display import display
from coordinator.matrix.expansion import has_values
from coordinator.planning.hardware_match import unmet
from agent.spec.registry import ENGINES, QUANTIZE, TOOLS
from agent.spec.sequential import VERDICT_METRICS
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix.loading import load_matrix
from coordinator.matrix.schema import Matrix, cell_tool_args
from coordinator.matrix.vocabulary import MAX_CELLS


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "cell"


@dataclass
class PlannedCell:
    cell_id: str
    params: dict                # the cell's axis values (what the table shows)
    settings: dict              # defaults + args + axis values (what runs)
    engine_name: str
    engine: object
    ref: object
    model_name: str
    model: object
    matrix: Matrix = field(repr=False)
    matrix_hash: str = ""
    # Spec parts cells have in common (engine, model, ref, repetitions, hygiene), built once:
    # load_plan hands every cell of a plan the same dict. Specs are frozen, so sharing is safe.
    spec_parts: dict = field(default_factory=dict, repr=False, compare=False)
    # the cell whose build quantizes this cell's model (None: its own build) and that build's targets
    quantizer: "PlannedCell | None" = field(default=None, repr=False, compare=False)
    quantizer_targets: frozenset = field(default=frozenset(), repr=False, compare=False)
    # the cells this one is a candidate against, one per comparison that pairs it (cell ids)
    baselines: list[str] = field(default_factory=list, repr=False, compare=False)
    verdict_metrics: list[str] = field(default_factory=list, repr=False, compare=False)
    _specs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={display(v)}" for k, v in self.params.items() if k != "model" or len(self.matrix.models) > 1)

    @property
    def cmake(self) -> list[str]:
        return list(self.engine.build.cmake) if self.engine.build else []

    @property
    def cuda(self) -> bool:
        """A CUDA build (the agent adds -DGGML_CUDA=ON and its GPUs' architectures)."""
        return needs_cuda(self.settings.get("gpus"), self.cmake)

    @property
    def build_label(self) -> str:
        flags = " ".join(self.cmake)
        if self.cuda and cmake_option(self.cmake, "GGML_CUDA") is None:
            flags = (flags + " " if flags else "") + "+CUDA"
        return f"{self.engine_name}@{self.ref.name} ({self.ref.kind} {self.ref.value})" + (f" {flags}" if flags else "")

    @property
    def build_order(self) -> tuple:
        return (self.engine_name, self.ref.name, tuple(self.cmake), self.cuda)

    def tool_args(self) -> dict:
        """The registry args this cell sets (both the matrix and the cell spec are built from it)."""
        return cell_tool_args(self.settings, self.engine.kind)

    def needed_targets(self) -> set[str]:
        """The tool, and llama-quantize when this cell's own build quantizes its model."""
        quantizes = self.settings.get("quant") and self.quantizer is None
        return {TOOLS[self.settings["tool"]].target} | ({QUANTIZE} if quantizes else set())

    def to_spec(self, run_id: str, store_url: str, build_targets: set[str] = frozenset(),
                one_per_class: bool = True, on_clash: str = "reject") -> spec_types.CellSpec:
        """The cell as an agent gets it (``one_per_class``: False for a `per: machine`
        placement). Specs are frozen, so a cell placed on several hardware classes builds
        its spec once."""
        key = (run_id, store_url, frozenset(build_targets), one_per_class, on_clash)
        if key not in self._specs:
            self._specs[key] = self._build_spec(run_id, store_url, build_targets, one_per_class, on_clash)
        return self._specs[key]

    def _build_spec(self, run_id: str, store_url: str, build_targets: set[str],
                    one_per_class: bool, on_clash: str) -> spec_types.CellSpec:
        m = self.matrix
        return spec_types.CellSpec(
            run_id=run_id, matrix_name=m.name, matrix_hash=self.matrix_hash, cell_id=self.cell_id,
            params=self.params, engine=self.key_part(("engine", self.engine_name), self._engine_spec),
            ref=self.key_part(("ref", self.ref.name), lambda: spec_types.RefSpec(
                name=self.ref.name, kind=self.ref.kind, value=str(self.ref.value))),
            model=self.key_part(("model", self.model_name), self._model_spec),
            quant=self.settings.get("quant"), quantizer=self._quantizer_spec(), tool=self.settings["tool"],
            args=spec_types.ToolArgs(**self.tool_args()), gpus=self.settings.get("gpus"),
            repetitions=self.key_part(("repetitions",), lambda: spec_types.Repetitions(**m.repetitions.model_dump())),
            hygiene=self.key_part(("hygiene",), lambda: spec_types.Hygiene(**m.hygiene.model_dump())),
            timeout_s=float(m.timeout_s), store_url=store_url,
            build_targets=sorted(build_targets | self.needed_targets()), one_per_class=one_per_class,
            on_clash=on_clash, baselines=self.baselines,
            **({"verdict_metrics": self.verdict_metrics} if self.verdict_metrics else {}))

    def key_part(self, key: tuple, make):
        if key not in self.spec_parts:
            self.spec_parts[key] = make()
        return self.spec_parts[key]

    def _engine_spec(self) -> spec_types.EngineSpec:
        return spec_types.EngineSpec(
            name=self.engine_name, kind=self.engine.kind, repo=self.engine.repo,
            sdist=spec_types.SdistSource(**self.engine.sdist.model_dump()) if self.engine.sdist else None,
            cmake=list(self.engine.build.cmake) if self.engine.build else [])

    def _quantizer_spec(self) -> spec_types.QuantizerSpec | None:
        q = self.quantizer
        if q is None:
            return None
        return self.key_part(("quantizer", q.build_order), lambda: spec_types.QuantizerSpec(
            engine=q.key_part(("engine", q.engine_name), q._engine_spec),
            ref=q.key_part(("ref", q.ref.name), lambda: spec_types.RefSpec(
                name=q.ref.name, kind=q.ref.kind, value=str(q.ref.value))),
            gpus=q.settings.get("gpus"), build_targets=sorted(self.quantizer_targets)))

    def _model_spec(self) -> spec_types.ModelSpec:
        return spec_types.ModelSpec(
            name=self.model_name, path=self.model.path, sha256=self.model.sha256, generate=self.model.generate,
            params=self.model.params.model_dump(exclude_none=True) if self.model.params else {})


@dataclass
class Plan:
    path: str
    matrix: Matrix
    matrix_hash: str
    cells: list[PlannedCell]

    @property
    def name(self) -> str:
        return self.matrix.name

    @property
    def default_run_id(self) -> str:
        """The same matrix (as normalized) maps to the same run, so a re-run resumes."""
        return f"{self.matrix.name}-{self.matrix_hash}"

    @property
    def comparisons(self) -> list[tuple[dict, dict | None]]:
        """(baseline values, candidate values or None) per comparison of the matrix."""
        return [c.sides() for c in self.matrix.compare or []]


def load_plan(path: str, max_cells: int = MAX_CELLS) -> Plan:
    """The matrix at ``path`` as cells; a bad file, or more than ``max_cells`` cells, is a UserError."""
    try:
        matrix = load_matrix(path, max_cells)
    except MatrixError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    # the dump is hashed with the top-level `per: class` every matrix had before `per` lived only
    # under hardware, so run ids stay what they were and earlier runs resume
    matrix_hash = _digest(_hash_input(matrix))[:12]
    cells, spec_parts = [], {}
    for params in matrix.cells():
        settings = matrix.cell_settings(params)
        engine_name, engine = matrix.engine_of(params["ref"])
        model_name = params.get("model") or next(iter(matrix.models))
        cells.append(PlannedCell(
            cell_id=f"{_slug(params['ref'])}-{_digest(params)[:10]}", params=params, settings=settings,
            engine_name=engine_name, engine=engine, ref=matrix.refs()[params["ref"]],
            model_name=model_name, model=matrix.models[model_name], matrix=matrix, matrix_hash=matrix_hash,
            spec_parts=spec_parts))
    _choose_quantizers(cells)
    _link_baselines(cells, [(*c.sides(), c.metrics) for c in matrix.compare or []])
    return Plan(path=str(path), matrix=matrix, matrix_hash=matrix_hash, cells=cells)


# Settings added after run ids were first made: at their defaults they stay out of the hash,
# so every earlier matrix keeps its run id (and resumes).
LATER_DEFAULTS = {("repetitions", "equivalence_pct"): 2.0}


def _hash_input(matrix: Matrix) -> dict:
    dump = {**matrix.model_dump(mode="json"), "per": "class"}
    if dump.get("bisect") is None:
        dump.pop("bisect", None)
    for (section, key), default in LATER_DEFAULTS.items():
        if dump.get(section, {}).get(key) == default:
            del dump[section][key]
    return dump


def baseline_ids(cells: list[dict], baseline: dict, candidate: dict | None) -> dict[str, str]:
    """cell id -> its baseline's cell id in one comparison: the cell with the baseline's values
    and the same other params. ``cells``: [{cell_id, params}]; a baseline cell, a cell the
    candidate values do not name, or one without a baseline cell is left out."""
    def key(params: dict) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    by_params = {key(c["params"]): c["cell_id"] for c in cells}
    out = {}
    for cell in cells:
        named = candidate is None or has_values(cell["params"], candidate)
        if has_values(cell["params"], baseline) or not named:
            continue
        base_id = by_params.get(key({**cell["params"], **baseline}))
        if base_id is not None:
            out[cell["cell_id"]] = base_id
    return out


def _link_baselines(cells: list[PlannedCell], comparisons: list[tuple[dict, dict | None, list[str]]]) -> None:
    """Each cell's baselines, in comparison order, and the metrics they judge (an agent
    stopping on verdicts waits on those only)."""
    plain = [{"cell_id": c.cell_id, "params": c.params} for c in cells]
    by_id = {c.cell_id: c for c in cells}
    for baseline, candidate, metrics in comparisons:
        for cell_id, base_id in baseline_ids(plain, baseline, candidate).items():
            cell = by_id[cell_id]
            if base_id not in cell.baselines:
                cell.baselines.append(base_id)
            cell.verdict_metrics += [m for m in metrics if m in VERDICT_METRICS and m not in cell.verdict_metrics]


def _loads(consumer: str, maker: str) -> bool:
    """Whether engine kind ``consumer`` loads a quantized file that kind ``maker`` wrote (the
    registry says whose files each kind loads besides its own)."""
    return consumer == maker or maker in ENGINES[consumer].loads_files_of


def _choose_quantizers(cells: list[PlannedCell]) -> None:
    """One build per (model, quant) quantizes it, for every cell that can load its file. The
    choice is the plan's, so every agent of every class is told the same: among the cells of
    that (model, quant), the build whose file the most engine kinds there load, then a CPU
    build (any agent can build it), then the first ref in the matrix, then the first cell.
    A cell whose kind cannot load that file takes the best build it can load (a quant one
    kind has is quantized by that kind). ``quantize_with: each``: every build its own."""
    groups: dict[tuple, list[PlannedCell]] = {}
    for cell in cells:
        if cell.settings.get("quant") and cell.model.quantize_with == "one":
            groups.setdefault((cell.model_name, cell.settings["quant"]), []).append(cell)
    for group in groups.values():
        order = {name: i for i, name in enumerate(group[0].matrix.refs())}
        kinds = {c.engine.kind for c in group}
        ranked = sorted(group, key=lambda c: (-sum(_loads(k, c.engine.kind) for k in kinds), c.cuda,
                                              order[c.ref.name]))      # stable: then matrix order
        for cell in group:
            maker = next(m for m in ranked if _loads(cell.engine.kind, m.engine.kind))
            cell.quantizer = None if maker.build_order == cell.build_order else maker
    targets = build_targets(cells)
    for cell in cells:
        if cell.quantizer is not None:
            cell.quantizer_targets = frozenset(targets[cell.quantizer.build_order])


def build_targets(cells: list[PlannedCell]) -> dict[tuple, set[str]]:
    """build -> every target its cells need: one configure and one compile per build."""
    targets: dict[tuple, set[str]] = {}
    for cell in cells:
        targets.setdefault(cell.build_order, set()).update(cell.needed_targets())
    return targets


def requirement_key(cell: PlannedCell) -> tuple:
    """All that ``cell_requirement`` reads of a cell: cells with one key match the same agents
    (every cell of a matrix shares its hardware spec; only ``gpus`` varies)."""
    return id(cell.matrix.hardware), cell.settings.get("gpus")


def cell_requirement(cell: PlannedCell, profile: dict) -> str | None:
    """The first reason ``profile`` cannot run ``cell``, or None (the fit rule: hardware_match.unmet)."""
    return unmet(cell.matrix.hardware, cell.settings.get("gpus"), profile)
