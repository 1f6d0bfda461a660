"""The matrix file's schema: typed models of every section, strict, with one-line messages.

Pydantic checks shapes and values here; what only the whole file can tell (refs name
defined engines, excludes name axes, every cell can run on its engine) is checked after,
by :mod:`coordinator.matrix.whole_file`. The tool arguments, as defaults (``args:``), axes
and include/exclude entries, are built from the capability registry
(``agent.spec.registry.ARGS``), so an argument the registry has is one every part takes.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, AliasChoices, BaseModel, Discriminator, Field, PrivateAttr, Tag,
                      create_model, field_serializer, field_validator, model_validator)

from agent.spec.printable import shown
from agent.spec.cellspec import ToolName
from agent.spec.flags import REPS_BOUNDS
from agent.spec.registry import ARGS, ArgSpec, left_out
from coordinator.matrix.checks import (SHA256, CmakeFlag, Commit, GitRef, Gpus, Name, NonNegInt, OneLine, PosInt,
                                       Quant, Strict, TinyDim, arg_type, canonical, fail, matrix_name,
                                       model_path, ref_name, git_repo, version)
from coordinator.matrix.expansion import expand_axes
from coordinator.matrix.ranges import GbRange, IntRange
from coordinator.matrix.vocabulary import (ALIASES, AMD_UARCHS, ENGINE_KINDS, ENTRIES_MAX, INTEL_UARCHS,
                                           LINE_VENDOR, UARCH_VENDOR)

# Top-level keys that belong in a section: placement reads only the section's, so a
# top-level one would be silently ignored (it is refused, naming where it goes).
MOVED = {"per": "hardware"}


# ---------------------------------------------------------------- engines and models

class Sdist(Strict):
    """A registry sdist that vendors an engine tree; each version becomes one commit tagged v<version>."""
    package: Name = Field(description="registry package name, e.g. llama-cpp-python")
    versions: list[Annotated[str, AfterValidator(version)]] = Field(min_length=1, description="versions, oldest first; each is tag v<version>")

    @field_validator("versions")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for x in v:
            if x in seen:
                fail(f"version {shown(x)} is listed twice")
            seen.add(x)
        return v


class Build(Strict):
    """How to build an engine beyond the defaults."""
    cmake: list[CmakeFlag] = Field(default_factory=list, description=(
        "extra -D<NAME>=<VALUE> flags; NAME one of the engine's GGML_*/LLAMA_* options, CMAKE_BUILD_TYPE, "
        "CMAKE_CUDA_ARCHITECTURES, BUILD_SHARED_LIBS"))


class Engine(Strict):
    """An engine to build: its kind and exactly one source (a git repo or a registry sdist)."""
    kind: Literal[ENGINE_KINDS] = Field(description="which engine family")
    repo: Annotated[str, AfterValidator(git_repo)] | None = Field(None, description=(
        "git URL (https://, ssh://, git://, user@host:path), local path or file:// URL"))
    sdist: Sdist | None = Field(None, description="a registry sdist's vendored tree instead of a repo")
    build: Build = Field(default_factory=Build, description="extra build settings")

    @model_validator(mode="after")
    def _one_source(self) -> "Engine":
        if (self.repo is None) == (self.sdist is None):
            fail("give exactly one of 'repo' or 'sdist'")
        return self

    def source(self) -> dict:
        """The source in the form ``agent.engine.sources.resolve`` takes."""
        if self.sdist is not None:
            return {"sdist": {"package": self.sdist.package, "versions": list(self.sdist.versions)}}
        return {"repo": self.repo}


class TinyParams(Strict):
    """Shape of a generated tiny model; unset fields keep the generator's defaults."""
    n_embd: TinyDim | None = Field(None, description="embedding width (multiple of n_head)")
    n_layer: TinyDim | None = Field(None, description="number of layers")
    n_ff: TinyDim | None = Field(None, description="feed-forward width")
    n_head: TinyDim | None = Field(None, description="attention heads")
    n_vocab: TinyDim | None = Field(None, description="vocabulary size (> 259: specials + byte tokens)")

    @model_validator(mode="after")
    def _shape(self) -> "TinyParams":
        from agent.engine.tinymodel import TinyLlamaParams  # the generator owns the defaults

        d = TinyLlamaParams()
        embd, head = self.n_embd or d.n_embd, self.n_head or d.n_head
        if embd % head:
            fail(f"n_embd ({embd}) must be a multiple of n_head ({head})")
        if (self.n_vocab or d.n_vocab) <= 259:
            fail("n_vocab must be > 259 (3 specials + 256 byte tokens)")
        return self

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


class Model(Strict):
    """A model: either generated (``generate``) or an existing file (``path``)."""
    generate: Literal["tiny-llama"] | None = Field(None, description="generate a tiny random-weight F32 model")
    params: TinyParams | None = Field(None, description="shape of the generated model")
    path: Annotated[str, AfterValidator(model_path)] | None = Field(
        None, description="path of an existing GGUF file (first shard); no '..' component")
    sha256: str | None = Field(None, description="expected sha256 of the file, 64 hex digits")
    quantize_with: Literal["one", "each"] = Field("one", description=(
        "who quantizes: one build per quant, its file shared by every ref and engine that can load it, "
        "so A and B load the same bytes (one); or each build its own llama-quantize (each)"))

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not SHA256.fullmatch(v):
            fail(f"{shown(v)} is not a sha256 (64 hex digits)")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _one_kind(self) -> "Model":
        if (self.generate is None) == (self.path is None):
            fail("give exactly one of 'generate' or 'path'")
        if self.params is not None and self.generate is None:
            fail("'params' only applies to a generated model")
        if self.sha256 is not None and self.path is None:
            fail("'sha256' only applies to a model file ('path')")
        return self


# ---------------------------------------------------------------- refs and tool args

class RefSpec(Strict):
    """One engine build in the matrix: a name plus exactly one of ref/branch/tag/commit/pr.

    A plain string item ``v1.2`` means ``{name: v1.2, ref: v1.2}``.
    """
    name: Annotated[str, AfterValidator(ref_name)] = Field(description="unique name used in cells and reports")
    engine: str | None = Field(None, description="engine name from engines: (required if more than one)")
    ref: GitRef | None = Field(None, description="any git ref name (branch, tag or refs/...)")
    branch: GitRef | None = Field(None, description="a branch (refs/heads/<branch>)")
    tag: GitRef | None = Field(None, description="a tag (refs/tags/<tag>)")
    commit: Commit | None = Field(None, description="a commit id, 7-40 hex digits")
    pr: Annotated[int, Field(ge=1, le=999_999_999)] | None = Field(
        None, description="a pull request number (refs/pull/N/head)")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"name": v, "ref": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_ref(self) -> "RefSpec":
        given = [k for k in ("ref", "branch", "tag", "commit", "pr") if getattr(self, k) is not None]
        if len(given) != 1:
            fail("give exactly one of ref, branch, tag, commit, pr"
                  + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> str:
        """Which of ref/branch/tag/commit/pr was given (``agent.engine.sources`` calls it ref_kind)."""
        return next(k for k in ("ref", "branch", "tag", "commit", "pr") if getattr(self, k) is not None)

    @property
    def value(self) -> str:
        return str(getattr(self, self.kind))


class BatchPair(Strict):
    """A batch axis value that sets n_batch and n_ubatch together."""
    b: arg_type(ARGS["batch"]) = Field(description="n_batch (-b)")
    ub: arg_type(ARGS["ubatch"]) | None = Field(None, description="n_ubatch (-ub)")


Batch = Annotated[Union[Annotated[arg_type(ARGS["batch"]), Tag("int")], Annotated[BatchPair, Tag("pair")]],
                  Discriminator(lambda v: "pair" if isinstance(v, (dict, BatchPair)) else "int")]


def _f(arg: ArgSpec, extra_doc: str = "", **kw):
    if arg.aliases:
        kw["validation_alias"] = AliasChoices(arg.name, *arg.aliases)
    return Field(None, description=arg.description + extra_doc, **kw)


class _Args(Strict):
    def given(self) -> dict:
        """Only the args the file set, by their long names."""
        return {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}


ToolArgs = create_model(
    "ToolArgs", __base__=_Args, __module__=__name__,
    __doc__="Default tool arguments for every cell; an axis or include of the same name overrides them.",
    **{arg.name: (arg_type(arg) | None, _f(arg)) for arg in ARGS.values()})

ARG_NAMES = tuple(ARGS)
AXIS_NAMES = ("ref", "model", "quant", "gpus", "tool") + ARG_NAMES


class AxisValues(ToolArgs):
    """An include/exclude entry or a compare baseline: one value per named axis."""
    ref: str | None = Field(None, description="a ref name from matrix.ref")
    model: str | None = Field(None, description="a model name from models:")
    quant: Quant | None = Field(None, description="quant type")
    gpus: Gpus | None = Field(None, description="number of GPUs visible (the first k)")
    tool: ToolName | None = Field(None, description="benchmark tool")
    batch: Batch | None = _f(ARGS["batch"])           # here a {b, ub} pair is allowed too

    def values(self) -> dict:
        """The keys the file gave, by long name, as plain values (a batch pair becomes a dict)."""
        return {k: _plain(getattr(self, k)) for k in type(self).model_fields if k in self.model_fields_set}


def _plain(v: Any) -> Any:
    return v.model_dump(exclude_none=True) if isinstance(v, BaseModel) else v


class _Axes(Strict):
    ref: list[RefSpec] = Field(min_length=1, description="engine builds to compare (required)")
    model: list[str] | None = Field(None, min_length=1, description="model names; optional with one model")
    quant: list[Quant] | None = Field(None, min_length=1, description="quant types; absent = the file as is")
    gpus: list[Gpus] | None = Field(None, min_length=1, description="first k GPUs visible")
    tool: list[ToolName] | None = Field(None, min_length=1, description="benchmark tools")

    _order: list[str] = PrivateAttr(default_factory=list)

    @field_validator(*AXIS_NAMES, mode="before", check_fields=False)
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        # "quant:" with nothing under it reads as null; an axis with no values is as wrong as [].
        if v is None:
            fail("an axis needs at least 1 value, got nothing (null)")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler):
        # Field order is declaration order; the product must follow the file's order.
        m = handler(data)
        if isinstance(data, dict):
            m._order = [ALIASES.get(k, k) for k in data if k not in ("include", "exclude")]
        return m

    def axes(self) -> dict[str, list]:
        """Axis name -> values in file order; refs become their names, pairs become dicts."""
        out = {}
        for axis in self._order or [k for k in AXIS_NAMES if getattr(self, k) is not None]:
            values = getattr(self, axis)
            out[axis] = [r.name for r in values] if axis == "ref" else [_plain(v) for v in values]
        return out


def _axis(arg: ArgSpec):
    if arg.name == "batch":                   # a {b, ub} pair is a batch value too
        return list[Batch] | None, _f(arg, " or {b, ub} pairs", min_length=1)
    return list[arg_type(arg)] | None, _f(arg, min_length=1)


MatrixAxes = create_model(
    "MatrixAxes", __base__=_Axes, __module__=__name__,
    __doc__="The ``matrix:`` block: axes in file order (first outermost), then exclude and include.",
    **{arg.name: _axis(arg) for arg in ARGS.values()},
    exclude=(list[AxisValues], Field(default_factory=list, max_length=ENTRIES_MAX,
                                     description="partial combinations to drop")),
    include=(list[AxisValues], Field(default_factory=list, max_length=ENTRIES_MAX,
                                     description="combinations to extend or add")))


def cell_tool_args(settings: dict, kind: str) -> dict:
    """The tool args of one cell's settings, for engine ``kind``: a batch pair becomes batch and
    ubatch, and an arg the engine does not have, at its off value, is left out (off is
    simply "not asked for" there)."""
    s = dict(settings)
    batch = s.pop("batch", None)
    if isinstance(batch, dict):
        s["batch"], s["ubatch"] = batch.get("b"), batch.get("ub", s.get("ubatch"))
    elif batch is not None:
        s["batch"] = batch
    return {k: v for k, v in s.items() if k in ARGS and not left_out(kind, k, v)}


class Repetitions(Strict):
    """How many engine processes each cell runs (the process is the statistical unit): an int
    N means exactly N (min = max = N)."""
    min: PosInt = Field(description="processes always run")
    max: PosInt = Field(description="processes at most")
    target_ci_pct: Annotated[float, Field(gt=0)] | None = Field(
        None, description="until: ci - stop early once the 95% CI half-width is within this % of the mean")
    until: Literal["ci", "verdict"] | None = Field(
        None, description="stop between min and max: ci (target_ci_pct reached) or verdict (every "
        "comparison of the cell settled, slower/faster/same, by the sequential rule); null = at min")
    per_process: Annotated[int, Field(ge=REPS_BOUNDS[0], le=REPS_BOUNDS[1])] | Literal["auto"] = Field(
        "auto", description="repetitions inside each process (llama-bench -r): a number, or auto = as many "
        "as make a process measure min_process_s (the agent calibrates them once per cell)")
    min_process_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        1.0, description="per_process auto: seconds each process measures at least (0 = one repetition)")
    equivalence_pct: Annotated[float, Field(ge=0.5, le=50)] = Field(
        2.0, description="until: verdict - a comparison is settled 'same' once its CI lies within +- this %")

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, v: Any) -> Any:
        return {"min": v, "max": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _order(self) -> "Repetitions":
        if self.min > self.max:
            fail(f"min ({self.min}) is greater than max ({self.max})")
        if self.until == "ci" and self.target_ci_pct is None:
            fail("until: ci needs target_ci_pct")
        if self.until == "verdict" and self.target_ci_pct is not None:
            fail("target_ci_pct belongs to until: ci; until: verdict stops on the comparisons' verdicts")
        return self


class Hygiene(Strict):
    """What the agent does around each measurement to keep runs comparable."""
    drop_caches: Literal["prefer", "require", "off"] = Field(
        "prefer", description="drop the page cache first: try (prefer), insist (require) or skip (off)")
    warmup: NonNegInt = Field(1, description="untimed warmup passes: 0 = none (the tool's own warmup "
                              "off), 1 = the tool's own pass, N > 1 = that plus N-1 untimed runs first")
    cooldown_s: Annotated[float, Field(ge=0)] = Field(0, description="seconds to idle between runs")
    max_load: Annotated[float, Field(ge=0)] | None = Field(
        None, description="wait until the 1-minute load average is below this (null = don't wait)")
    quiet_wait_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        30, description="seconds a cell may wait in all, before its measured processes, for other "
        "processes to leave the CPU (0 = never wait)")
    busy: Literal["wait", "mark", "fail"] = Field(
        "wait", description="when other processes use the CPU before a measured process: wait for "
        "quiet (up to quiet_wait_s), then run it marked disturbed (wait); run it marked (mark); or "
        "wait, then fail the cell (fail)")
    pin: Literal["auto", "off"] = Field(
        "off", description="auto: run the engine on the `threads` CPUs that were least used just "
        "before, leaving the others to hwmatrix (recorded per process); off: the OS places it")
    order: Literal["random", "counterbalanced"] = Field(
        "random", description="the order an A/B group's cells take their turns in each round: "
        "random (seeded by the run, so a rerun repeats it; no periodic neighbour can favour a side) "
        "or counterbalanced (A B, B A, ...; cancels drift but aliases with a period-2 neighbour)")

    @field_validator("drop_caches", "pin", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


# ---------------------------------------------------------------- hardware spec

def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class CpuSpec(Strict):
    """CPU requirements; each set field must hold."""
    vendor: Literal["AMD", "Intel"] | None = Field(None, description="AMD or Intel (any case)")
    uarch: list[Annotated[str, AfterValidator(canonical(AMD_UARCHS + INTEL_UARCHS, "microarchitecture"))]] | None = Field(
        None, description="microarchitecture(s), one must match: zen..zen6 or an Intel generation")
    line: list[Annotated[str, AfterValidator(canonical(tuple(LINE_VENDOR), "product line"))]] | None = Field(
        None, description="product line(s): ryzen, threadripper, threadripper-pro, epyc, xeon, core")
    model: OneLine | None = Field(None, description="glob on the CPU brand string (case-insensitive)")
    cores: IntRange | None = Field(None, description="physical cores, e.g. '>=16'")
    threads: IntRange | None = Field(None, description="hardware threads, e.g. '>=32'")
    flags: list[Annotated[str, AfterValidator(str.lower)]] | None = Field(
        None, description="ISA flags that must all be present, e.g. avx512f")

    @field_validator("vendor", mode="before")
    @classmethod
    def _vendor_case(cls, v: Any) -> Any:
        return {"amd": "AMD", "intel": "Intel"}.get(v.lower(), v) if isinstance(v, str) else v

    @field_validator("uarch", "line", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("uarch")
    @classmethod
    def _uarch_vendor(cls, v, info):
        vendor = info.data.get("vendor")
        if v and vendor and not any(UARCH_VENDOR[u] == vendor for u in v):
            other = "/".join(sorted({UARCH_VENDOR[u] for u in v}))
            fail(f"uarch [{', '.join(v)}] is {other}, but vendor is {vendor}")
        return v

    @field_validator("line")
    @classmethod
    def _line_vendor(cls, v, info):
        if not v:
            return v
        possible = {"AMD", "Intel"}
        if info.data.get("vendor"):
            possible &= {info.data["vendor"]}
        if info.data.get("uarch"):
            possible &= {UARCH_VENDOR[u] for u in info.data["uarch"]}
        if not any(LINE_VENDOR[x] in possible for x in v):
            other = (f"vendor is {info.data['vendor']}" if info.data.get("vendor")
                     else f"uarch [{', '.join(info.data['uarch'])}] is {'/'.join(sorted({UARCH_VENDOR[u] for u in info.data['uarch']}))}")
            fail(f"line [{', '.join(v)}] is {'/'.join(sorted({LINE_VENDOR[x] for x in v}))}, but {other}")
        return v


class GpuSpec(Strict):
    """GPU requirements; ``count`` counts the GPUs that meet ``name`` and ``vram_gb``."""
    count: IntRange | None = Field(None, description="how many GPUs, e.g. 2 or '>=2'")
    name: OneLine | None = Field(None, description="glob on the GPU name (case-insensitive)")
    vram_gb: GbRange | None = Field(None, description="memory per GPU in GiB (rounded), e.g. '>=24'")

    @field_validator("name", "vram_gb")
    @classmethod
    def _needs_a_gpu(cls, v, info):
        count = info.data.get("count")
        if v is not None and count is not None and count.also(">=", 1).is_empty():
            fail(f"{info.field_name} needs a GPU, but count {count} admits none")
        return v


class HardwareSpec(Strict):
    """Where a cell may run; empty means any machine."""
    cpu: CpuSpec | None = Field(None, description="CPU requirements")
    gpu: GpuSpec | None = Field(None, description="GPU requirements")
    ram_gb: GbRange | None = Field(None, description="system RAM in GB, e.g. '>=200'")
    per: Literal["class", "machine"] = Field(
        "class", description="run each cell once per matching hardware class (any one machine of it), "
        "or on every matching machine")


# ---------------------------------------------------------------- the whole file

class Compare(Strict):
    """One comparison of the run table: each candidate cell against the cell with the
    baseline's values and the same other params."""
    baseline: AxisValues = Field(description="axis values of the baseline, e.g. {ref: a} or {rtr: false}")
    candidate: AxisValues | None = Field(
        None, description="axis values of the cells compared, on the baseline's axes, e.g. {rtr: true} "
        "(default: every cell that is not a baseline)")
    metrics: list[Annotated[str, AfterValidator(lambda v: v if re.fullmatch(r"[a-z][a-z0-9_]*", v) else fail(
        f"{shown(v)} is not a metric name"))]] = Field(
        default_factory=lambda: ["pp_tps", "tg_tps"], min_length=1, description="metrics to compare")

    def sides(self) -> tuple[dict, dict | None]:
        """(baseline values, candidate values or None) as plain values."""
        return self.baseline.values(), self.candidate.values() if self.candidate is not None else None


class BisectSection(Strict):
    """`hwmatrix bisect --matrix FILE`: the range and the question; the rest of the file says
    what to build and measure (one value per axis other than ref, or --cell to pick)."""
    good: GitRef = Field(description="the older ref, as it was")
    bad: GitRef = Field(description="the newer ref, where it changed")
    engine: Name | None = Field(None, description="engine name from engines: (required if more than one)")
    metric: Literal["tg_tps", "pp_tps"] = Field("tg_tps", description="what to bisect on")
    find: Literal["slower", "faster"] = Field("slower", description="the change sought")
    min_processes: Annotated[int, Field(ge=2, le=1000)] = Field(3, description="processes a side before a verdict")
    max_processes: Annotated[int, Field(ge=2, le=1000)] = Field(20, description="processes a side at most per step")


class Matrix(Strict):
    """A matrix file: what to build, which models, which axes to sweep, where to run.

    Valid only once :func:`coordinator.matrix.whole_file.check` has passed too, as
    :func:`coordinator.matrix.loading.validate_matrix` does.
    """
    name: Annotated[str, AfterValidator(matrix_name)] = Field(description="matrix name, [A-Za-z0-9._-]+")
    description: str | None = Field(None, description="free text")
    engines: dict[Name, Engine] = Field(min_length=1, description="engine name -> engine")
    models: dict[Name, Model] = Field(min_length=1, description="model name -> model")
    tool: ToolName = Field("llama-bench", description="default tool for cells")
    args: ToolArgs = Field(default_factory=ToolArgs, description="default tool args for all cells")
    repetitions: Repetitions = Field(default_factory=lambda: Repetitions(min=10, max=10),
                                     description="processes per cell: an int, or {min, max, until, target_ci_pct, per_process, min_process_s}")
    hygiene: Hygiene = Field(default_factory=Hygiene, description="cache dropping, warmup, cooldown, load")
    timeout_s: PosInt = Field(1800, description="per-cell wall-clock timeout in seconds")
    hardware: HardwareSpec = Field(default_factory=HardwareSpec, description="where cells may run")
    matrix: MatrixAxes = Field(description="axes, exclude and include")
    bisect: BisectSection | None = Field(None, description="a bisect of this matrix's cell (hwmatrix bisect --matrix)")
    compare: Annotated[list[Compare], Field(min_length=1)] | None = Field(
        None, description="comparisons for the run table: one {baseline, candidate, metrics} or a list of them")

    _ref_map: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, v: Any) -> Any:
        # "hardware:" with nothing under it reads as null; treat it as the empty default.
        if isinstance(v, dict):
            return {k: x for k, x in v.items()
                    if not (x is None and k in ("args", "hygiene", "hardware", "description", "compare"))}
        return v

    @field_validator("compare", mode="before")
    @classmethod
    def _one_compare(cls, v: Any) -> Any:
        # the single-mapping form is a one-item list
        return [v] if isinstance(v, dict) else v

    @field_serializer("compare")
    def _compare_dump(self, v: list[Compare] | None, info) -> Any:
        # one comparison without a candidate dumps as the mapping it always was, so the run ids
        # (a hash of this dump) of matrices written before lists stay what they were
        if v is None:
            return None
        dumps = [{k: x for k, x in c.model_dump(mode=info.mode).items() if not (k == "candidate" and x is None)}
                 for c in v]
        return dumps[0] if len(dumps) == 1 else dumps

    # -- public helpers

    def refs(self) -> dict[str, RefSpec]:
        """Ref name -> ref (built once: every cell looks its ref up here)."""
        if not self._ref_map:
            self._ref_map = {r.name: r for r in self.matrix.ref}
        return self._ref_map

    def engine_of(self, ref_name: str) -> tuple[str, Engine]:
        """(engine name, engine) that builds the named ref."""
        ref = self.refs()[ref_name]
        name = ref.engine or next(iter(self.engines))
        return name, self.engines[name]

    def cells(self) -> list[dict]:
        """The expanded cells, in order; ``model`` is filled in when there is only one model."""
        cells = expand_axes(self.matrix.axes(), [e.values() for e in self.matrix.include],
                            [e.values() for e in self.matrix.exclude])
        if len(self.models) == 1:
            only = next(iter(self.models))
            for c in cells:
                c.setdefault("model", only)
        return cells

    def cell_settings(self, cell: dict) -> dict:
        """Everything one cell runs with: the default tool, then args, then the cell's values."""
        return {"tool": self.tool, **self.args.given(), **cell}
