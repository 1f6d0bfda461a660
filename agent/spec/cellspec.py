"""What the coordinator hands an agent: one fully resolved cell, self-contained and typed.

The agent needs nothing else (no coordinator code) to build, run and record the cell. A
volunteer agent trusts no coordinator, so every value that reaches argv, git, a path or a
store key is re-checked here with the same ``agent.spec.flags`` checks the matrix passed.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from agent.spec.flags import (GPUS_BOUNDS, REPS_BOUNDS, TINY_PARAM_MAX, cmake_flag_problem, name_problem, path_problem,
                              ref_name_problem, ref_value_problem, repo_problem, version_problem)
from agent.spec.registry import (ARGS, BOOL, CHOICE, ENGINES, INT, KV_TYPE, OVERRIDES, TENSOR_SPLIT, TOOLS,
                                 ArgSpec)
from agent.spec.clash import ClashPolicy

ToolName = Literal[tuple(TOOLS)]
EngineKind = Literal[tuple(ENGINES)]


def _checked(problem_of):
    """A validator that refuses with ``problem_of``'s message (pydantic makes it a ValidationError)."""
    def check(v: str) -> str:
        problem = problem_of(v)
        if problem:
            raise ValueError(problem)
        return v
    return AfterValidator(check)


def _one_line(v: str) -> str | None:
    return None if "\n" not in v and "\r" not in v and "\0" not in v else "must be a single-line string"


Name = Annotated[str, _checked(name_problem)]
CmakeFlag = Annotated[str, _checked(cmake_flag_problem)]
Version = Annotated[str, _checked(version_problem)]
Hex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{1,64}$")]
Target = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SdistSource(_Strict):
    package: Name
    versions: list[Version] = Field(min_length=1)


class EngineSpec(_Strict):
    name: Name
    kind: EngineKind
    repo: Annotated[str, _checked(repo_problem)] | None = None
    sdist: SdistSource | None = None
    cmake: list[CmakeFlag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> "EngineSpec":
        if (self.repo is None) == (self.sdist is None):
            raise ValueError("give exactly one of 'repo' or 'sdist'")
        if problem := next(filter(None, (cmake_flag_problem(f, self.kind) for f in self.cmake)), None):
            raise ValueError(problem)          # each engine takes only its own cmake options
        return self

    def source(self) -> dict:
        return {"repo": self.repo} if self.repo else {"sdist": self.sdist.model_dump()}


class RefSpec(_Strict):
    name: Annotated[str, _checked(ref_name_problem)]
    kind: Literal["ref", "branch", "tag", "commit", "pr"]
    value: str

    @model_validator(mode="after")
    def _value_fits_kind(self) -> "RefSpec":
        problem = ref_value_problem(self.kind, self.value)
        if problem:
            raise ValueError(problem)
        return self


class ModelSpec(_Strict):
    name: Name
    path: Annotated[str, _checked(path_problem)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    generate: Literal["tiny-llama"] | None = None
    # the tiny model's shape; bounded so a spec cannot ask for an absurd file
    params: dict[Literal["n_embd", "n_layer", "n_ff", "n_head", "n_vocab"],
                 Annotated[int, Field(ge=1, le=TINY_PARAM_MAX)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> "ModelSpec":
        if (self.generate is None) == (self.path is None):
            raise ValueError("give exactly one of 'generate' or 'path'")
        return self


class QuantizerSpec(_Strict):
    """The build whose llama-quantize makes a cell's quantized model. The coordinator picks one
    build per (model, quant), so every ref and engine that measures that quant loads the same
    file; the agent builds it (cached, with the targets it has elsewhere) before quantizing."""
    engine: EngineSpec
    ref: RefSpec
    gpus: int | None = Field(None, ge=GPUS_BOUNDS[0], le=GPUS_BOUNDS[1])    # CUDA or not, as its own cells build it
    build_targets: list[Target] = Field(default_factory=list)


class Repetitions(_Strict):
    """min/max count engine processes, the statistical unit. Each process does ``per_process``
    repetitions (llama-bench -r), or with "auto" as many as make it measure at least
    ``min_process_s`` (calibrated once per cell; 0: one). ``until``: stop between min and max
    once the CI is tight ("ci", target_ci_pct) or once every comparison of the cell is settled
    against its ``baselines`` ("verdict", agent.spec.sequential)."""
    min: int = Field(10, ge=1)
    max: int = Field(10, ge=1)
    target_ci_pct: float | None = None
    per_process: int | Literal["auto"] = "auto"
    min_process_s: float = Field(1.0, ge=0, le=3600)
    until: Literal["ci", "verdict"] | None = None
    equivalence_pct: float = Field(2.0, ge=0.5, le=50)    # until: verdict - "same" means within this

    @field_validator("per_process")
    @classmethod
    def _bounded(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not REPS_BOUNDS[0] <= v <= REPS_BOUNDS[1]:
            raise ValueError(f"per_process must be between {REPS_BOUNDS[0]} and {REPS_BOUNDS[1]}")
        return v


class Hygiene(_Strict):
    drop_caches: Literal["prefer", "require", "off"] = "prefer"
    warmup: int = Field(1, ge=0)  # 0: tool's own warmup off; 1: on; N > 1: plus N-1 untimed runs
    cooldown_s: float = Field(0.0, ge=0)
    max_load: float | None = None   # wait until the 1-min load per core is below this
    quiet_wait_s: float = Field(30.0, ge=0, le=3600)   # what a cell may wait in all for a quiet machine
    busy: Literal["wait", "mark", "fail"] = "wait"    # agent.machine.quiet.settle
    pin: Literal["auto", "off"] = "off"               # auto: the engine on the `threads` least used CPUs
    order: Literal["random", "counterbalanced"] = "random"   # agent.engine.interleave.round_order


def _arg_field(arg: ArgSpec) -> tuple[Any, Any]:
    """The agent's type for one registry argument: the bounds and shapes that keep argv inert."""
    if arg.type == INT:
        return int | None, Field(None, ge=arg.bounds[0], le=arg.bounds[1])
    if arg.type == BOOL:
        return bool | None, None
    if arg.type == CHOICE:
        return Literal[arg.choices] | None, None
    if arg.type == KV_TYPE:
        return str | None, Field(None, pattern=r"^[a-zA-Z0-9_]{1,16}$")
    if arg.type == TENSOR_SPLIT:
        return str | None, Field(None, pattern=r"^[0-9.]+(/[0-9.]+)*$")
    if arg.type == OVERRIDES:
        return Annotated[str, Field(max_length=arg.max_length), _checked(_one_line)] | None, None
    raise TypeError(f"argument {arg.name!r} has type {arg.type!r}, which the cell spec has no type for")


ToolArgs = create_model(
    "ToolArgs", __base__=_Strict, __module__=__name__,
    __doc__="Typed, bounded tool arguments (one field per registry argument): only these ever reach an engine's argv.",
    **{arg.name: _arg_field(arg) for arg in ARGS.values()})


class CellSpec(_Strict):
    run_id: Name
    matrix_name: Name
    matrix_hash: Hex
    cell_id: Name
    params: dict                  # the cell's axis values, for display and the record
    engine: EngineSpec
    ref: RefSpec
    model: ModelSpec
    quant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")] | None = None
    # whose llama-quantize makes the quant; None: this cell's own build (it is the one, or `quantize_with: each`)
    quantizer: QuantizerSpec | None = None
    tool: ToolName = "llama-bench"
    args: ToolArgs = Field(default_factory=ToolArgs)
    gpus: int | None = Field(None, ge=GPUS_BOUNDS[0], le=GPUS_BOUNDS[1])   # first k GPUs visible; None = leave as is, 0 = none
    repetitions: Repetitions = Field(default_factory=Repetitions)
    hygiene: Hygiene = Field(default_factory=Hygiene)
    timeout_s: float = 1800.0
    store_url: str
    # a stored ok record with other content at this cell's key: refuse (and keep it
    # spooled), overwrite, or store beside it
    on_clash: ClashPolicy = "reject"
    # Every target the cells sharing this build need, so the build is configured and
    # compiled once; empty means just what this cell needs.
    build_targets: list[Target] = Field(default_factory=list)
    # `per: class`: one result per hardware class, so an agent skips (and never stores) a
    # cell another agent of its class already recorded - a retry after a frozen agent
    # thaws leaves no duplicate
    one_per_class: bool = True
    # The cells this cell is compared against (one per comparison of the matrix that makes it
    # a candidate): with `until: verdict` its A/B group measures on until each such pair is settled.
    baselines: list[Name] = Field(default_factory=list, max_length=64)
    # The metrics those comparisons judge (what until: verdict waits on).
    verdict_metrics: list[Literal["pp_tps", "tg_tps"]] = Field(default_factory=lambda: ["pp_tps", "tg_tps"],
                                                               max_length=2)
