"""The matrix file: typed models, one-line errors that name file, line and key, and expansion.

Pydantic checks shapes and values; a second pass (``Matrix._check``) checks what only the
whole file can tell (refs name defined engines, excludes name axes, every cell can run on
its engine). Either way the first problem becomes one :class:`MatrixError`, placed on the
line of the offending key by the line map from :mod:`agent.spec.yaml_lines`.

Nothing here costs more than the file's size allows: the cells are counted from the axes
before any is built and refused above ``--max-cells`` (``MAX_CELLS``), include and exclude
hold at most ``ENTRIES_MAX`` entries each, duplicate checks use sets, and messages quote
values with :func:`agent.spec.printable.shown`, so a huge value never makes a huge message.
"""
from __future__ import annotations

import difflib
import math
import operator
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, AliasChoices, BaseModel, ConfigDict,
                      Discriminator, Field, PlainSerializer, PlainValidator, PrivateAttr, Tag,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from agent.spec.flags import (ARG_BOUNDS, NAME_MAX, OT_MAX, TINY_PARAM_MAX,
                         cmake_flag_problem, commit_problem, git_ref_problem, name_problem,
                         path_problem, ref_name_problem, repo_problem, version_problem)
from agent.spec.printable import shown
from agent.spec.yaml_lines import Lines, MatrixError, format_key, load_with_lines

__all__ = [
    "MatrixError", "Matrix", "Engine", "Sdist", "Build", "Model", "TinyParams", "RefSpec",
    "ToolArgs", "Repetitions", "Hygiene", "HardwareSpec", "CpuSpec", "GpuSpec", "Range",
    "BatchPair", "MatrixAxes", "AxisValues", "Compare", "load_matrix", "validate_matrix",
    "expand_axes", "count_cells", "KNOWN_QUANTS", "AXIS_NAMES", "ARG_NAMES", "MAX_CELLS", "ENTRIES_MAX",
]

# ---------------------------------------------------------------- vocabularies

QUANTS_COMMON = (
    "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M "
    "Q5_K_S Q5_K_M Q6_K IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M "
    "IQ4_NL IQ4_XS MXFP4").split()
QUANTS_MAINLINE_ONLY = "TQ1_0 TQ2_0 MXFP4_MOE".split()
QUANTS_IK_ONLY = (
    "Q6_0 IQ2_K IQ2_KS IQ2_KL IQ3_K IQ3_KS IQ3_KL IQ4_K IQ4_KS IQ4_KSS IQ5_K IQ5_KS IQ6_K "
    "IQ1_KT IQ2_KT IQ3_KT IQ4_KT IQ1_BN IQ2_BN Q8_KV Q8_K_R8 Q8_KV_R8 BF16_R16 "
    "Q4_0_4_4 Q4_0_4_8 Q4_0_8_8 "
    "Q4_0_R8 Q5_0_R4 Q6_0_R4 Q8_0_R8 Q2_K_R4 Q3_K_R4 Q4_K_R4 Q5_K_R4 Q6_K_R4 IQ2_XXS_R4 "
    "IQ2_XS_R4 IQ2_S_R4 IQ2_M_R4 IQ3_XXS_R4 IQ3_S_R4 IQ1_S_R4 IQ1_M_R4 IQ4_NL_R4 IQ4_XS_R8 "
    "IQ2_BN_R4 IQ2_K_R4 IQ3_K_R4 IQ4_K_R4 IQ5_K_R4 IQ4_KS_R4 IQ5_KS_R4 MXFP4_R8").split()
KNOWN_QUANTS = tuple(dict.fromkeys(QUANTS_COMMON + QUANTS_MAINLINE_ONLY + QUANTS_IK_ONLY))

KV_TYPES = ("f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q6_0", "q8_KV")
KV_IK_ONLY = ("q6_0", "q8_KV")

AMD_UARCHS = ("zen", "zen+", "zen2", "zen3", "zen4", "zen5", "zen6")
INTEL_UARCHS = (
    "haswell", "broadwell", "skylake", "skylake-x", "cascadelake", "cooperlake", "kabylake",
    "coffeelake", "cannonlake", "icelake", "icelake-x", "tigerlake", "alderlake", "raptorlake",
    "meteorlake", "arrowlake", "lunarlake", "sapphirerapids", "emeraldrapids", "graniterapids",
    "sierraforest")
LINE_VENDOR = {"ryzen": "AMD", "threadripper": "AMD", "threadripper-pro": "AMD", "epyc": "AMD",
               "xeon": "Intel", "core": "Intel"}
UARCH_VENDOR = {**{u: "AMD" for u in AMD_UARCHS}, **{u: "Intel" for u in INTEL_UARCHS}}

ENGINE_KINDS = ("llama.cpp", "ik_llama.cpp")
TOOLS = ("llama-bench", "llama-sweep-bench")

# Short spellings accepted for two args; cells always use the long name.
ALIASES = {"b": "batch", "ub": "ubatch"}
SHORT = {long: short for short, long in ALIASES.items()}

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TS = re.compile(r"[0-9]+(\.[0-9]+)?(/[0-9]+(\.[0-9]+)?)*")
# The run id is "<name>-<12 hex>" (plus "-YYYYmmddTHHMMSS" with --fresh) and must stay a
# valid name for the agent, so the matrix name leaves room for both suffixes.
MATRIX_NAME_MAX = NAME_MAX - len("-0123456789ab-20250101T000000")
# Each cell is at least one build-and-benchmark; ten thousand is weeks of machine time, and
# planning that many takes about a second. `--max-cells` raises it for one plan or run.
MAX_CELLS = 10_000
ENTRIES_MAX = 1_000         # include and exclude entries each (GitHub allows 256 jobs in all)
COUNT_STEPS_MAX = 2_000_000  # work allowed to count the cells that the excludes leave (about a second)


def _fail(message: str):
    """Raise a pydantic error whose text is exactly ``message``."""
    raise PydanticCustomError("matrix", message)


def did_you_mean(word: str, candidates, *, fold_case: bool = False) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    cands = list(candidates)
    if fold_case:
        folded = {c.upper(): c for c in cands}
        hit = difflib.get_close_matches(str(word).upper(), list(folded), n=1, cutoff=0.6)
        return f"; did you mean {folded[hit[0]]!r}?" if hit else ""
    hit = difflib.get_close_matches(str(word), cands, n=1, cutoff=0.6)
    return f"; did you mean {hit[0]!r}?" if hit else ""


# ---------------------------------------------------------------- scalar checks

def _check(problem_of):
    """A pydantic after-validator from an ``agent.spec.flags`` check, with the check's message."""
    def check(v: str) -> str:
        problem = problem_of(v)
        if problem:
            _fail(problem)
        return v
    return check


_name = _check(name_problem)


def _matrix_name(v: str) -> str:
    _name(v)
    if len(v) > MATRIX_NAME_MAX:
        _fail(f"the matrix name is longer than {MATRIX_NAME_MAX} characters (its run id must stay a name)")
    return v


def _canonical(table, what: str):
    lookup = {t.lower(): t for t in table}

    def check(v: str) -> str:
        hit = lookup.get(v.lower())
        if hit is None:
            _fail(f"{shown(v)} is not a known {what}" + did_you_mean(v, table, fold_case=True))
        return hit
    return check


def _git_ref(v: str) -> str:
    problem = git_ref_problem(v)
    if problem:
        _fail(f"{shown(v)} is not a valid git ref name: {problem}")
    return v


def _commit(v: str) -> str:
    _check(commit_problem)(v)
    return v.lower()


_ref_name = _check(ref_name_problem)
_cmake_flag = _check(cmake_flag_problem)
_repo = _check(repo_problem)
_version = _check(version_problem)


def _model_path(v: str) -> str:
    _one_line(v)
    problem = path_problem(v)
    if problem:
        _fail(f"not a usable model path: {problem}")
    return v


def _ts(v: str) -> str:
    if not _TS.fullmatch(v):
        _fail(f"{shown(v)} is not a tensor split: numbers joined by '/', e.g. '3/1'")
    return v


def _one_line(v: str) -> str:
    if not v or "\n" in v or "\r" in v or "\0" in v:
        _fail("must be a non-empty single-line string")
    return v


Name = Annotated[str, AfterValidator(_name)]
Quant = Annotated[str, AfterValidator(_canonical(KNOWN_QUANTS, "quant type"))]
KvType = Annotated[str, AfterValidator(_canonical(KV_TYPES, "KV cache type"))]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


def _bounded(arg: str):
    """An int tool arg within the bounds the agent enforces too (``agent.spec.flags.ARG_BOUNDS``)."""
    lo, hi = ARG_BOUNDS[arg]
    return Annotated[int, Field(ge=lo, le=hi)]


NPrompt = _bounded("n_prompt")
NGen = _bounded("n_gen")
Depth = _bounded("depth")
NBatch = _bounded("batch")
NUBatch = _bounded("ubatch")
Threads = _bounded("threads")
Ngl = _bounded("ngl")
Mla = _bounded("mla")
Amb = _bounded("amb")
Ctx = _bounded("ctx")
NRep = _bounded("nrep")
Gpus = _bounded("gpus")
TinyDim = Annotated[int, Field(ge=1, le=TINY_PARAM_MAX)]
SplitMode = Literal["none", "layer", "row", "graph"]
TensorSplit = Annotated[str, AfterValidator(_ts)]
OneLine = Annotated[str, AfterValidator(_one_line)]
Overrides = Annotated[str, Field(max_length=OT_MAX), AfterValidator(_one_line)]
ToolName = Literal["llama-bench", "llama-sweep-bench"]
CmakeFlag = Annotated[str, AfterValidator(_cmake_flag)]
GitRef = Annotated[str, AfterValidator(_git_ref)]
Commit = Annotated[str, AfterValidator(_commit)]


class _Strict(BaseModel):
    """No coercion ("4" is not 4, true is not 1) and no unknown keys: typos must fail loudly."""
    model_config = ConfigDict(strict=True, extra="forbid")


# ---------------------------------------------------------------- ranges ("<cmp>")

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
        ">": operator.gt, "<": operator.lt}
_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)?\s*([0-9]+(?:\.[0-9]+)?)\s*")


@dataclass(frozen=True)
class Range:
    """A set of allowed values written as ``">=2,<=4"`` (or a bare number meaning ``==``).

    ``integer`` ranges (counts) must admit a whole number; every range lives on >= 0.
    """
    clauses: tuple[tuple[str, float], ...]
    integer: bool = True

    @classmethod
    def parse(cls, value: Any, integer: bool = True) -> "Range":
        if isinstance(value, Range):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            _fail(f"expected a number or comparisons like '>=2' or '>=2,<=4', got {shown(value)}")
        if isinstance(value, (int, float)):
            clauses = [("==", float(value))]
        else:
            clauses = []
            for part in value.split(","):
                m = _CLAUSE.fullmatch(part)
                if not m:
                    _fail(f"{shown(value)} is not a comparison list like '>=2' or '>=2,<=4'")
                clauses.append((m.group(1) or "==", float(m.group(2))))
        rng = cls(tuple(clauses), integer)
        if rng.is_empty():
            _fail(f"{shown(value)} admits no {'whole number' if integer else 'value'}")
        return rng

    def admits(self, x: float | None) -> bool:
        if x is None:
            return False
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        return all(_OPS[op](x, v) for op, v in self.clauses)

    def also(self, op: str, v: float) -> "Range":
        """This range with one more clause (used to ask "does it admit anything >= 1?")."""
        return Range(self.clauses + ((op, float(v)),), self.integer)

    def is_empty(self) -> bool:
        lo, lo_strict, hi, hi_strict = 0.0, False, math.inf, False
        excluded = []
        for op, v in self.clauses:
            if op in (">=", ">", "==") and (v > lo or (v == lo and op == ">")):
                lo, lo_strict = v, op == ">"
            if op in ("<=", "<", "==") and (v < hi or (v == hi and op == "<")):
                hi, hi_strict = v, op == "<"
            if op == "!=":
                excluded.append(v)
        if self.integer:
            first = math.floor(lo) + 1 if lo_strict or lo != math.floor(lo) else int(lo)
            if hi == math.inf:
                return False
            last = math.ceil(hi) - 1 if hi_strict or hi != math.ceil(hi) else int(hi)
            if first > last:
                return True
            if last - first > len(excluded):
                return False
            return all(any(n == e for e in excluded) for n in range(first, last + 1))
        if lo > hi:
            return True
        if lo == hi:
            return lo_strict or hi_strict or lo in excluded
        return False

    def __str__(self) -> str:
        def num(v: float) -> str:
            return str(int(v)) if v == int(v) else str(v)
        if len(self.clauses) == 1 and self.clauses[0][0] == "==":
            return num(self.clauses[0][1])
        return ",".join(op + num(v) for op, v in self.clauses)


IntRange = Annotated[Range, PlainValidator(lambda v: Range.parse(v, integer=True)), PlainSerializer(str)]
GbRange = Annotated[Range, PlainValidator(lambda v: Range.parse(v, integer=False)), PlainSerializer(str)]


# ---------------------------------------------------------------- engines and models

class Sdist(_Strict):
    """A registry sdist that vendors an engine tree; each version becomes one commit tagged v<version>."""
    package: Name = Field(description="registry package name, e.g. llama-cpp-python")
    versions: list[Annotated[str, AfterValidator(_version)]] = Field(min_length=1, description="versions, oldest first; each is tag v<version>")

    @field_validator("versions")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for x in v:
            if x in seen:
                _fail(f"version {shown(x)} is listed twice")
            seen.add(x)
        return v


class Build(_Strict):
    """How to build an engine beyond the defaults."""
    cmake: list[CmakeFlag] = Field(default_factory=list, description=(
        "extra -D<NAME>=<VALUE> flags; NAME one of the engine's GGML_*/LLAMA_* options, CMAKE_BUILD_TYPE, "
        "CMAKE_CUDA_ARCHITECTURES, BUILD_SHARED_LIBS"))


class Engine(_Strict):
    """An engine to build: its kind and exactly one source (a git repo or a registry sdist)."""
    kind: Literal["llama.cpp", "ik_llama.cpp"] = Field(description="which engine family")
    repo: Annotated[str, AfterValidator(_repo)] | None = Field(None, description=(
        "git URL (https://, ssh://, git://, user@host:path), local path or file:// URL"))
    sdist: Sdist | None = Field(None, description="a registry sdist's vendored tree instead of a repo")
    build: Build = Field(default_factory=Build, description="extra build settings")

    @model_validator(mode="after")
    def _one_source(self) -> "Engine":
        if (self.repo is None) == (self.sdist is None):
            _fail("give exactly one of 'repo' or 'sdist'")
        return self

    def source(self) -> dict:
        """The source in the form ``agent.engine.sources.resolve`` takes."""
        if self.sdist is not None:
            return {"sdist": {"package": self.sdist.package, "versions": list(self.sdist.versions)}}
        return {"repo": self.repo}


class TinyParams(_Strict):
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
            _fail(f"n_embd ({embd}) must be a multiple of n_head ({head})")
        if (self.n_vocab or d.n_vocab) <= 259:
            _fail("n_vocab must be > 259 (3 specials + 256 byte tokens)")
        return self

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


class Model(_Strict):
    """A model: either generated (``generate``) or an existing file (``path``)."""
    generate: Literal["tiny-llama"] | None = Field(None, description="generate a tiny random-weight F32 model")
    params: TinyParams | None = Field(None, description="shape of the generated model")
    path: Annotated[str, AfterValidator(_model_path)] | None = Field(
        None, description="path of an existing GGUF file (first shard); no '..' component")
    sha256: str | None = Field(None, description="expected sha256 of the file, 64 hex digits")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.fullmatch(v):
            _fail(f"{shown(v)} is not a sha256 (64 hex digits)")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _one_kind(self) -> "Model":
        if (self.generate is None) == (self.path is None):
            _fail("give exactly one of 'generate' or 'path'")
        if self.params is not None and self.generate is None:
            _fail("'params' only applies to a generated model")
        if self.sha256 is not None and self.path is None:
            _fail("'sha256' only applies to a model file ('path')")
        return self


# ---------------------------------------------------------------- refs and tool args

class RefSpec(_Strict):
    """One engine build in the matrix: a name plus exactly one of ref/branch/tag/commit/pr.

    A plain string item ``v1.2`` means ``{name: v1.2, ref: v1.2}``.
    """
    name: Annotated[str, AfterValidator(_ref_name)] = Field(description="unique name used in cells and reports")
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
            _fail("give exactly one of ref, branch, tag, commit, pr"
                  + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> str:
        """Which of ref/branch/tag/commit/pr was given (``agent.engine.sources`` calls it ref_kind)."""
        return next(k for k in ("ref", "branch", "tag", "commit", "pr") if getattr(self, k) is not None)

    @property
    def value(self) -> str:
        return str(getattr(self, self.kind))


class BatchPair(_Strict):
    """A batch axis value that sets n_batch and n_ubatch together."""
    b: NBatch = Field(description="n_batch (-b)")
    ub: NUBatch | None = Field(None, description="n_ubatch (-ub)")


Batch = Annotated[Union[Annotated[NBatch, Tag("int")], Annotated[BatchPair, Tag("pair")]],
                  Discriminator(lambda v: "pair" if isinstance(v, (dict, BatchPair)) else "int")]

_ARG_DOCS = {
    "n_prompt": "prompt tokens (-p)", "n_gen": "generated tokens (-n)",
    "depth": "KV depth before the test (-d, llama.cpp only)", "batch": "n_batch (-b; alias b)",
    "ubatch": "n_ubatch (-ub; alias ub)", "threads": "threads (-t)",
    "ngl": "GPU layers (-ngl; -1 = all)", "fa": "flash attention (-fa)",
    "ctk": "K cache type (-ctk)", "ctv": "V cache type (-ctv)",
    "mla": "MLA mode 0-3 (-mla, ik_llama.cpp only)", "amb": "attention max batch MiB (-amb, ik only)",
    "rtr": "run-time repack (-rtr, ik only; one value per process)",
    "fmoe": "fused MoE (-fmoe, ik only; one value per process)",
    "ctx": "context size for llama-sweep-bench (-c)", "nrep": "repetitions at zero context (-nrep)",
    "sm": "split mode (-sm: none|layer|row|graph)", "ts": "tensor split, e.g. '3/1' (-ts)",
    "ot": "tensor overrides (-ot)", "mmap": "memory-map the model (-mmp)",
}


def _f(name: str):
    kw = {"validation_alias": AliasChoices(name, SHORT[name])} if name in SHORT else {}
    return Field(None, description=_ARG_DOCS[name], **kw)


class ToolArgs(_Strict):
    """Default tool arguments for every cell; an axis or include of the same name overrides them."""
    n_prompt: NPrompt | None = _f("n_prompt")
    n_gen: NGen | None = _f("n_gen")
    depth: Depth | None = _f("depth")
    batch: NBatch | None = _f("batch")
    ubatch: NUBatch | None = _f("ubatch")
    threads: Threads | None = _f("threads")
    ngl: Ngl | None = _f("ngl")
    fa: bool | None = _f("fa")
    ctk: KvType | None = _f("ctk")
    ctv: KvType | None = _f("ctv")
    mla: Mla | None = _f("mla")
    amb: Amb | None = _f("amb")
    rtr: bool | None = _f("rtr")
    fmoe: bool | None = _f("fmoe")
    ctx: Ctx | None = _f("ctx")
    nrep: NRep | None = _f("nrep")
    sm: SplitMode | None = _f("sm")
    ts: TensorSplit | None = _f("ts")
    ot: Overrides | None = _f("ot")
    mmap: bool | None = _f("mmap")

    def given(self) -> dict:
        """Only the args the file set, by their long names."""
        return {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}


ARG_NAMES = tuple(ToolArgs.model_fields)
AXIS_NAMES = ("ref", "model", "quant", "gpus", "tool") + ARG_NAMES


def _axis(name: str, extra_doc: str = ""):
    kw = {"validation_alias": AliasChoices(name, SHORT[name])} if name in SHORT else {}
    return Field(None, min_length=1, description=_ARG_DOCS[name] + extra_doc, **kw)


class AxisValues(ToolArgs):
    """An include/exclude entry or a compare baseline: one value per named axis."""
    ref: str | None = Field(None, description="a ref name from matrix.ref")
    model: str | None = Field(None, description="a model name from models:")
    quant: Quant | None = Field(None, description="quant type")
    gpus: Gpus | None = Field(None, description="number of GPUs visible (the first k)")
    tool: ToolName | None = Field(None, description="benchmark tool")
    batch: Batch | None = _f("batch")           # here a {b, ub} pair is allowed too

    def values(self) -> dict:
        """The keys the file gave, by long name, as plain values (a batch pair becomes a dict)."""
        return {k: _plain(getattr(self, k)) for k in type(self).model_fields if k in self.model_fields_set}


def _plain(v: Any) -> Any:
    return v.model_dump(exclude_none=True) if isinstance(v, BaseModel) else v


class MatrixAxes(_Strict):
    """The ``matrix:`` block: axes in file order (first outermost), then exclude and include."""
    ref: list[RefSpec] = Field(min_length=1, description="engine builds to compare (required)")
    model: list[str] | None = Field(None, min_length=1, description="model names; optional with one model")
    quant: list[Quant] | None = Field(None, min_length=1, description="quant types; absent = the file as is")
    gpus: list[Gpus] | None = Field(None, min_length=1, description="first k GPUs visible")
    tool: list[ToolName] | None = Field(None, min_length=1, description="benchmark tools")
    n_prompt: list[NPrompt] | None = _axis("n_prompt")
    n_gen: list[NGen] | None = _axis("n_gen")
    depth: list[Depth] | None = _axis("depth")
    batch: list[Batch] | None = _axis("batch", " or {b, ub} pairs")
    ubatch: list[NUBatch] | None = _axis("ubatch")
    threads: list[Threads] | None = _axis("threads")
    ngl: list[Ngl] | None = _axis("ngl")
    fa: list[bool] | None = _axis("fa")
    ctk: list[KvType] | None = _axis("ctk")
    ctv: list[KvType] | None = _axis("ctv")
    mla: list[Mla] | None = _axis("mla")
    amb: list[Amb] | None = _axis("amb")
    rtr: list[bool] | None = _axis("rtr")
    fmoe: list[bool] | None = _axis("fmoe")
    ctx: list[Ctx] | None = _axis("ctx")
    nrep: list[NRep] | None = _axis("nrep")
    sm: list[SplitMode] | None = _axis("sm")
    ts: list[TensorSplit] | None = _axis("ts")
    ot: list[Overrides] | None = _axis("ot")
    mmap: list[bool] | None = _axis("mmap")
    exclude: list[AxisValues] = Field(default_factory=list, max_length=ENTRIES_MAX,
                                      description="partial combinations to drop")
    include: list[AxisValues] = Field(default_factory=list, max_length=ENTRIES_MAX,
                                      description="combinations to extend or add")

    _order: list[str] = PrivateAttr(default_factory=list)

    @field_validator(*AXIS_NAMES, mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        # "quant:" with nothing under it reads as null; an axis with no values is as wrong as [].
        if v is None:
            _fail("an axis needs at least 1 value, got nothing (null)")
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


class Repetitions(_Strict):
    """How often each cell runs: an int N means exactly N (min = max = N)."""
    min: PosInt = Field(description="runs always done")
    max: PosInt = Field(description="runs at most")
    target_ci_pct: Annotated[float, Field(gt=0)] | None = Field(
        None, description="stop early once the 95% CI half-width is within this % of the mean")
    per_process: PosInt = Field(
        1, description="repetitions per engine process (llama-bench -r); the process is the "
        "statistical unit, so 1 gives the most units for the time")

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, v: Any) -> Any:
        return {"min": v, "max": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _order(self) -> "Repetitions":
        if self.min > self.max:
            _fail(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Hygiene(_Strict):
    """What the agent does around each measurement to keep runs comparable."""
    drop_caches: Literal["prefer", "require", "off"] = Field(
        "prefer", description="drop the page cache first: try (prefer), insist (require) or skip (off)")
    warmup: NonNegInt = Field(1, description="untimed warmup passes: 0 = none (the tool's own warmup "
                              "off), 1 = the tool's own pass, N > 1 = that plus N-1 untimed runs first")
    cooldown_s: Annotated[float, Field(ge=0)] = Field(0, description="seconds to idle between runs")
    max_load: Annotated[float, Field(ge=0)] | None = Field(
        None, description="wait until the 1-minute load average is below this (null = don't wait)")

    @field_validator("drop_caches", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


# ---------------------------------------------------------------- hardware spec

def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class CpuSpec(_Strict):
    """CPU requirements; each set field must hold."""
    vendor: Literal["AMD", "Intel"] | None = Field(None, description="AMD or Intel (any case)")
    uarch: list[Annotated[str, AfterValidator(_canonical(AMD_UARCHS + INTEL_UARCHS, "microarchitecture"))]] | None = Field(
        None, description="microarchitecture(s), one must match: zen..zen6 or an Intel generation")
    line: list[Annotated[str, AfterValidator(_canonical(tuple(LINE_VENDOR), "product line"))]] | None = Field(
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
            _fail(f"uarch [{', '.join(v)}] is {other}, but vendor is {vendor}")
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
            _fail(f"line [{', '.join(v)}] is {'/'.join(sorted({LINE_VENDOR[x] for x in v}))}, but {other}")
        return v


class GpuSpec(_Strict):
    """GPU requirements; ``count`` counts the GPUs that meet ``name`` and ``vram_gb``."""
    count: IntRange | None = Field(None, description="how many GPUs, e.g. 2 or '>=2'")
    name: OneLine | None = Field(None, description="glob on the GPU name (case-insensitive)")
    vram_gb: GbRange | None = Field(None, description="memory per GPU in GiB (rounded), e.g. '>=24'")

    @field_validator("name", "vram_gb")
    @classmethod
    def _needs_a_gpu(cls, v, info):
        count = info.data.get("count")
        if v is not None and count is not None and count.also(">=", 1).is_empty():
            _fail(f"{info.field_name} needs a GPU, but count {count} admits none")
        return v


class HardwareSpec(_Strict):
    """Where a cell may run; empty means any machine."""
    cpu: CpuSpec | None = Field(None, description="CPU requirements")
    gpu: GpuSpec | None = Field(None, description="GPU requirements")
    ram_gb: GbRange | None = Field(None, description="system RAM in GB, e.g. '>=200'")
    per: Literal["class", "machine"] = Field(
        "class", description="run each cell once per matching hardware class (any one machine of it), "
        "or on every matching machine")


# ---------------------------------------------------------------- the whole file

class Compare(_Strict):
    """What reports compare against: the baseline cell values and the metrics shown."""
    baseline: AxisValues = Field(description="axis values of the baseline, e.g. {ref: a}")
    metrics: list[Annotated[str, AfterValidator(lambda v: v if re.fullmatch(r"[a-z][a-z0-9_]*", v) else _fail(
        f"{shown(v)} is not a metric name"))]] = Field(
        default_factory=lambda: ["pp_tps", "tg_tps"], min_length=1, description="metrics to compare")


class _Invalid(Exception):
    """A whole-file check failed at ``loc`` (a path into the data as the file spells it)."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = loc, message


IK_ONLY = {
    "rtr": lambda v: v is True, "fmoe": lambda v: v is True, "mla": lambda v: v is not None,
    "amb": lambda v: bool(v), "sm": lambda v: v == "graph", "ctk": lambda v: v in KV_IK_ONLY,
    "ctv": lambda v: v in KV_IK_ONLY, "quant": lambda v: v in QUANTS_IK_ONLY,
    "tool": lambda v: v == "llama-sweep-bench",
}
MAINLINE_ONLY = {
    "depth": lambda v: bool(v), "sm": lambda v: v == "row",
    "quant": lambda v: v in QUANTS_MAINLINE_ONLY,
}


class Matrix(_Strict):
    """A matrix file: what to build, which models, which axes to sweep, where to run."""
    name: Annotated[str, AfterValidator(_matrix_name)] = Field(description="matrix name, [A-Za-z0-9._-]+")
    description: str | None = Field(None, description="free text")
    engines: dict[Name, Engine] = Field(min_length=1, description="engine name -> engine")
    models: dict[Name, Model] = Field(min_length=1, description="model name -> model")
    tool: ToolName = Field("llama-bench", description="default tool for cells")
    args: ToolArgs = Field(default_factory=ToolArgs, description="default tool args for all cells")
    repetitions: Repetitions = Field(default_factory=lambda: Repetitions(min=10, max=10),
                                     description="runs per cell: an int, or {min, max, target_ci_pct, per_process}")
    hygiene: Hygiene = Field(default_factory=Hygiene, description="cache dropping, warmup, cooldown, load")
    timeout_s: PosInt = Field(1800, description="per-cell wall-clock timeout in seconds")
    hardware: HardwareSpec = Field(default_factory=HardwareSpec, description="where cells may run")
    per: Literal["class", "machine"] = Field("class", description="run once per hardware class or per machine")
    matrix: MatrixAxes = Field(description="axes, exclude and include")
    compare: Compare | None = Field(None, description="baseline and metrics for reports")

    _ref_map: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, v: Any) -> Any:
        # "hardware:" with nothing under it reads as null; treat it as the empty default.
        if isinstance(v, dict):
            return {k: x for k, x in v.items()
                    if not (x is None and k in ("args", "hygiene", "hardware", "description", "compare"))}
        return v

    @model_validator(mode="after")
    def _whole_file(self, info: ValidationInfo) -> "Matrix":
        self._check((info.context or {}).get("max_cells", MAX_CELLS))
        return self

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

    # -- whole-file checks, first problem wins

    def _check(self, max_cells: int = MAX_CELLS) -> None:
        for name, e in self.engines.items():          # each engine takes only its own cmake options
            for j, flag in enumerate(e.build.cmake):
                if problem := cmake_flag_problem(flag, e.kind):
                    raise _Invalid(("engines", name, "build", "cmake", j), problem)
        m = self.matrix
        refs = m.ref
        names: set[str] = set()
        for i, r in enumerate(refs):
            if r.engine is None:
                if len(self.engines) > 1:
                    raise _Invalid(("matrix", "ref", i), f"ref {r.name!r} must name its engine "
                                   f"(one of {', '.join(self.engines)})")
            elif r.engine not in self.engines:
                raise _Invalid(("matrix", "ref", i, "engine"), f"engine {shown(r.engine)} is not defined under engines"
                               + did_you_mean(r.engine, self.engines))
            if r.name in names:
                raise _Invalid(("matrix", "ref", i, "name"), f"ref name {r.name!r} is used twice")
            names.add(r.name)
        axes = m.axes()
        for axis, values in axes.items():
            seen: set = set()
            for j, v in enumerate(values):
                if _hashable(v) in seen:
                    raise _Invalid(("matrix", axis, j), f"duplicate value {shown(v)} in axis {axis!r}")
                seen.add(_hashable(v))
        for j, model in enumerate(m.model or []):
            if model not in self.models:
                raise _Invalid(("matrix", "model", j), f"model {shown(model)} is not defined under models"
                               + did_you_mean(model, self.models))
        for section in ("exclude", "include"):
            for j, entry in enumerate(getattr(m, section)):
                vals = entry.values()
                if not vals:
                    raise _Invalid(("matrix", section, j), f"empty {section} entry")
                for k, v in vals.items():
                    loc = ("matrix", section, j, k)
                    if section == "exclude" and k not in axes:
                        raise _Invalid(loc, f"exclude key {k!r} is not an axis of this matrix "
                                       f"(axes: {', '.join(axes)})")
                    self._check_name(k, v, loc)
        excludes = [e.values() for e in m.exclude]
        try:
            if count_cells(axes, excludes, limit=max_cells + 1) > max_cells:   # stops at max_cells + 1
                try:
                    count = f"{count_cells(axes, excludes):,}"
                except _TooIntricate:
                    count = f"more than {max_cells:,}"
                sizes = " x ".join(str(len(v)) for v in axes.values())
                raise _Invalid(("matrix",), f"the matrix expands to {count} cells ({sizes}"
                               + (" less excluded" if excludes else "") + f"), more than the {max_cells:,} "
                               "--max-cells allows; exclude some, or raise --max-cells")
            cells = self.cells()
        except _TooIntricate:
            raise _Invalid(("matrix", "exclude"), f"the {len(excludes)} exclude entries overlap too much to "
                           f"count the cells they leave within {COUNT_STEPS_MAX:,} steps; merge some") from None
        if len(cells) > max_cells:
            raise _Invalid(("matrix", "include"), f"with its include entries the matrix expands to "
                           f"{len(cells):,} cells, more than the {max_cells:,} --max-cells allows")
        if not cells:
            raise _Invalid(("matrix",), "the matrix expands to no cells (everything is excluded)")
        for c in cells:
            missing = [k for k in ("ref", "model") if k not in c]
            if missing:
                raise _Invalid(self._origin(c, missing[0]),
                               f"this include matches no combination, so it adds a cell, and that cell "
                               f"has no ref: {shown(c)}" if missing[0] == "ref" else
                               "a 'model' axis is required when there is more than one model")
            self._check_engine(c)
        if self.compare is not None:
            for k, v in self.compare.baseline.values().items():
                loc = ("compare", "baseline", k)
                self._check_name(k, v, loc)
                if k not in axes:
                    raise _Invalid(loc, f"baseline key {k!r} is not an axis of this matrix (axes: {', '.join(axes)})")
                if not any(_same(v, w) for w in axes[k]):
                    raise _Invalid(loc, f"baseline {k} {shown(v)} is not a value of axis {k!r}")

    def _check_name(self, key: str, value: Any, loc: tuple) -> None:
        if key == "ref" and value not in self.refs():
            raise _Invalid(loc, f"ref {shown(value)} is not defined in matrix.ref" + did_you_mean(value, self.refs()))
        if key == "model" and value not in self.models:
            raise _Invalid(loc, f"model {shown(value)} is not defined under models" + did_you_mean(value, self.models))

    def _origin(self, cell: dict, key: str) -> tuple:
        """Where in the file ``cell[key]`` came from: an axis item, an include entry, or args/tool."""
        m = self.matrix
        if key in cell:
            values = m.axes().get(key, [])
            for j, v in enumerate(values):
                if _same(v, cell[key]):
                    return ("matrix", key, j)
        for j, entry in enumerate(m.include):
            vals = entry.values()
            if all(k in cell and _same(v, cell[k]) for k, v in vals.items()) and (key not in cell or key in vals):
                return ("matrix", "include", j) + ((key,) if key in vals else ())
        if key == "tool":
            return ("tool",)
        if key in self.args.model_fields_set:
            return ("args", key)
        return ("matrix",)

    def _check_engine(self, cell: dict) -> None:
        engine_name, engine = self.engine_of(cell["ref"])
        only, needs = (IK_ONLY, "ik_llama.cpp") if engine.kind == "llama.cpp" else (MAINLINE_ONLY, "llama.cpp")
        for key, value in self.cell_settings(cell).items():
            if key in only and only[key](value):
                where = self._origin(cell, key) if key in cell else (
                    ("tool",) if key == "tool" else ("args", key))
                text = str(value).lower() if isinstance(value, bool) else value
                hint = "; exclude that combination" if where[0] == "matrix" else "; set it per ref with include"
                raise _Invalid(where, f"{key}={text} needs {needs}, but ref {cell['ref']!r} builds "
                               f"engine {engine_name!r} ({engine.kind}){hint}")


# ---------------------------------------------------------------- expansion

def _same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1 (as GitHub's JSON values are) and compares mappings whole."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _hashable(v: Any) -> Any:
    """A key equal for two values exactly when :func:`_same` says they are the same."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, dict):
        return ("dict", frozenset((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ("list", tuple(_hashable(x) for x in v))
    return ("value", v)


class _TooIntricate(Exception):
    """Counting the cells the excludes leave took more than ``COUNT_STEPS_MAX`` steps."""


class _Product:
    """The axes' product less the excludes, counted and walked without building what they drop.

    Each exclude entry becomes {axis position: positions of the value it names}. At each axis
    the values that no live entry names lead to the same count, so counting costs about the
    entries times the axes, not the product; walking visits only combinations that survive.
    Counting what many entries leave, each naming values on several axes, is a hard problem
    in general, so it stops at ``COUNT_STEPS_MAX``; with a ``limit`` every count stops there
    (``min(count, limit)``), which is much cheaper when many combinations survive.
    """

    def __init__(self, axes: dict[str, list], exclude: list[dict], limit: int | None = None):
        self.limit = limit
        self.keys, self.values = list(axes), list(axes.values())
        where = []
        for values in self.values:
            positions: dict = {}
            for j, v in enumerate(values):
                positions.setdefault(_hashable(v), set()).add(j)
            where.append(positions)
        self.rules: list[dict[int, set]] = []
        for entry in exclude:
            rule = {self.keys.index(k): where[self.keys.index(k)].get(_hashable(v), set()) for k, v in entry.items()}
            if all(rule.values()):          # an entry naming a value no axis has drops nothing
                self.rules.append(rule)
        self.last = [max(rule, default=-1) for rule in self.rules]
        self.memo: dict[tuple, int] = {}
        self.steps = 0

    def _split(self, level: int, live: frozenset) -> tuple[frozenset, dict[int, frozenset]]:
        """(entries that do not name this axis, value position -> the entries that name it)."""
        free, named = [], {}
        for r in live:
            positions = self.rules[r].get(level)
            if positions is None:
                free.append(r)
            else:
                for j in positions:
                    named.setdefault(j, []).append(r)
        free = frozenset(free)
        return free, {j: free | frozenset(rs) for j, rs in named.items()}

    def count(self, level: int = 0, live: frozenset | None = None) -> int:
        """Combinations of the axes from ``level`` on that no entry in ``live`` drops."""
        if live is None:
            live = frozenset(range(len(self.rules)))
        key = (level, live)
        if key not in self.memo:
            self.steps += 1 + len(live)
            if self.steps > COUNT_STEPS_MAX:
                raise _TooIntricate()
            if any(self.last[r] < level for r in live):
                n = 0                       # an entry matched every axis it names
            elif not live:
                n = math.prod(len(v) for v in self.values[level:])
            else:
                free, named = self._split(level, live)
                rest = len(self.values[level]) - len(named)
                n = rest * self.count(level + 1, free) if rest else 0
                for rules in named.values():
                    if self.limit is not None and n >= self.limit:
                        break
                    n += self.count(level + 1, rules)
            self.memo[key] = n if self.limit is None else min(n, self.limit)
        return self.memo[key]

    def combos(self) -> list[dict]:
        """The surviving combinations in product order (first axis outermost); ``limit=1``
        makes the test for an empty subtree cheapest."""
        out: list[dict] = []
        chosen: list = [None] * len(self.keys)

        def walk(level: int, live: frozenset) -> None:
            if not self.count(level, live):
                return
            if level == len(self.keys):
                out.append(dict(zip(self.keys, chosen)))
                return
            free, named = self._split(level, live)
            for j, value in enumerate(self.values[level]):
                chosen[level] = value
                walk(level + 1, named.get(j, free))

        if self.keys:
            walk(0, frozenset(range(len(self.rules))))
        return out


def _check_exclude_keys(axes: dict[str, list], exclude: list[dict]) -> None:
    for entry in exclude:
        for key in entry:
            if key not in axes:
                raise ValueError(f"exclude key {key!r} is not an axis")


def count_cells(axes: dict[str, list], exclude: list[dict], limit: int | None = None) -> int:
    """How many combinations the axes give once the excludes drop theirs, without building any
    (with ``limit``: at most that many, found faster). An include adds at most one cell each.

    Raises ``_TooIntricate`` past ``COUNT_STEPS_MAX`` steps: hundreds of excludes, each
    naming values on several axes of a product of billions, get there.
    """
    _check_exclude_keys(axes, exclude)
    return _Product(axes, exclude, limit).count() if axes else 0


def expand_axes(axes: dict[str, list], include: list[dict], exclude: list[dict]) -> list[dict]:
    """Expand axes exactly as GitHub Actions expands ``strategy.matrix``.

    Cartesian product (first axis outermost); drop combinations matching every key of an
    exclude entry; then each include entry, in order, is merged into every product
    combination whose original axis values it does not contradict (values that earlier
    includes added may be overwritten), or, if it fits none, appended as a new combination.
    Excluded combinations are never built, and includes find their combinations through an
    index of the axis values, so the work follows the cells made, not the product.
    """
    _check_exclude_keys(axes, exclude)
    combos = _Product(axes, exclude, limit=1).combos()
    if not include:
        return combos
    originals = len(combos)
    index: dict[str, dict] = {k: {} for k in axes}      # axis -> value -> combinations holding it
    for i, c in enumerate(combos):
        for k in axes:
            index[k].setdefault(_hashable(c[k]), set()).add(i)
    for entry in include:
        hits = None
        for k, v in entry.items():
            if k in axes:
                found = index[k].get(_hashable(v), set())
                hits = found if hits is None else hits & found
        if hits is None:
            hits = range(originals)
        for i in hits:
            combos[i].update(entry)
        if not hits:
            combos.append(dict(entry))
    return combos


# ---------------------------------------------------------------- errors and loading

def _candidate_model(loc: tuple) -> type[BaseModel] | None:
    """The model class that the error at ``loc`` (without its last part) was validating."""
    cands: list[Any] = [Matrix]
    for part in loc:
        nxt: list[Any] = []
        for t in cands:
            t = _unwrap(t)
            for u in (typing.get_args(t) if _is_union(t) else (t,)):
                u = _unwrap(u)
                origin = typing.get_origin(u)
                if isinstance(u, type) and issubclass(u, BaseModel):
                    f = u.model_fields.get(part) or u.model_fields.get(ALIASES.get(part, ""))
                    if f is not None:
                        nxt.append(f.annotation)
                    else:
                        nxt.append(u)  # a union tag such as 'pair': stay on this type
                elif origin is list and isinstance(part, int):
                    nxt.append(typing.get_args(u)[0])
                elif origin is dict:
                    nxt.append(typing.get_args(u)[1])
        cands = nxt
    for t in cands:
        t = _unwrap(t)
        for u in (typing.get_args(t) if _is_union(t) else (t,)):
            u = _unwrap(u)
            if isinstance(u, type) and issubclass(u, BaseModel):
                return u
    return None


def _unwrap(t: Any) -> Any:
    while typing.get_origin(t) is Annotated:
        t = typing.get_args(t)[0]
    return t


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (Union, types.UnionType)


def _data_path(data: Any, loc: tuple, keep_last: bool) -> tuple:
    """``loc`` reduced to the parts that exist in the data (drops union tags such as 'pair').

    A long name the file spelled short (``batch`` as ``b``) follows the file's spelling.
    """
    path, cur = [], data
    for i, part in enumerate(loc):
        # ``part in SHORT`` first: SHORT.get() gives None, which a YAML null key would match.
        if isinstance(cur, dict) and part not in cur and part in SHORT and SHORT[part] in cur:
            part = SHORT[part]
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
            path.append(part)
        elif (isinstance(cur, list) and isinstance(part, int) and not isinstance(part, bool)
              and 0 <= part < len(cur)):
            cur = cur[part]
            path.append(part)
        elif keep_last and i == len(loc) - 1:
            path.append(part)
    return tuple(path)


def _nearest_line(lines: Lines, path: tuple) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _got(value: Any) -> str:
    return shown(value)


def _message(err: dict, data: Any, path: tuple) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        key = loc[-1]
        parent = _data_path(data, loc[:-1], False)
        cur = data
        for p in parent:
            cur = cur[p]
        if key in ALIASES and isinstance(cur, dict) and ALIASES[key] in cur:
            return f"{key!r} and {ALIASES[key]!r} are the same; give one of them"
        model = _candidate_model(loc[:-1])
        names = list(model.model_fields) if model else []
        names += [a for a, long in ALIASES.items() if long in names]
        what = ("axis" if model in (MatrixAxes, AxisValues) else "arg" if model is ToolArgs else "key")
        return f"unknown {what} {shown(key)}" + did_you_mean(str(key), names)
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "matrix":
        return msg
    if kind == "too_short":
        return f"needs at least {err['ctx']['min_length']} item"
    if kind == "too_long":
        return f"holds {err['ctx']['actual_length']:,} entries, at most {err['ctx']['max_length']:,} are allowed"
    msg = msg[0].lower() + msg[1:] if msg else msg
    if "input" in err:
        msg += f", got {_got(err['input'])}"
        if kind == "string_type" and isinstance(err["input"], (int, float)):
            msg += " (quote it in YAML)"
    return msg


def validate_matrix(data: Any, lines: Lines | None = None, file: str | Path = "<matrix>", *,
                    max_cells: int = MAX_CELLS) -> Matrix:
    """Validate parsed YAML into a :class:`Matrix`; the first problem raises :class:`MatrixError`.

    More than ``max_cells`` cells is a problem too, found by counting before expanding.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise MatrixError(file, lines.get(()), None,
                          "a matrix file must be a mapping with name:, engines:, models: and matrix:")
    try:
        return Matrix.model_validate(data, context={"max_cells": max_cells})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        # A missing key is reported on its parent; every other key exists in the file.
        path = _data_path(data, err["loc"], keep_last=False)
        raise MatrixError(file, _nearest_line(lines, path), format_key(path),
                          _message(err, data, path)) from None
    except _Invalid as exc:
        path = _data_path(data, exc.loc, keep_last=False)
        raise MatrixError(file, _nearest_line(lines, path), format_key(path), exc.message) from None


def load_matrix(path: str | Path, max_cells: int = MAX_CELLS) -> Matrix:
    """Read and validate a matrix file; any problem raises a one-line :class:`MatrixError`."""
    data, lines = load_with_lines(path)
    return validate_matrix(data, lines, path, max_cells=max_cells)
