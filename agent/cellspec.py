"""What the coordinator hands an agent: one fully resolved cell, self-contained and typed.

The agent needs nothing else (no coordinator code) to build, run and record the cell.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.store import ClashPolicy

ToolName = Literal["llama-bench", "llama-sweep-bench"]
EngineKind = Literal["llama.cpp", "ik_llama.cpp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SdistSource(_Strict):
    package: str
    versions: list[str]


class EngineSpec(_Strict):
    name: str
    kind: EngineKind
    repo: str | None = None
    sdist: SdistSource | None = None
    cmake: list[str] = Field(default_factory=list)

    def source(self) -> dict:
        return {"repo": self.repo} if self.repo else {"sdist": self.sdist.model_dump()}


class RefSpec(_Strict):
    name: str
    kind: Literal["ref", "branch", "tag", "commit", "pr"]
    value: str


class ModelSpec(_Strict):
    name: str
    path: str | None = None
    sha256: str | None = None
    generate: Literal["tiny-llama"] | None = None
    params: dict[str, int] = Field(default_factory=dict)


class Repetitions(_Strict):
    """Counts are repetitions; each engine process does ``per_process`` of them, and the
    process, not the repetition, is what the statistics count as one sample."""
    min: int = 10
    max: int = 10
    target_ci_pct: float | None = None
    per_process: int = Field(1, ge=1)


class Hygiene(_Strict):
    drop_caches: Literal["prefer", "require", "off"] = "prefer"
    warmup: int = 1              # 0: tool's own warmup off; 1: on; N > 1: plus N-1 untimed runs
    cooldown_s: float = 0.0
    max_load: float | None = None   # wait until the 1-min load per core is below this


class ToolArgs(_Strict):
    """Typed, bounded tool arguments: only these ever reach an engine's argv."""
    n_prompt: int | None = Field(None, ge=0, le=1_000_000)
    n_gen: int | None = Field(None, ge=0, le=1_000_000)
    depth: int | None = Field(None, ge=0, le=10_000_000)
    batch: int | None = Field(None, ge=1, le=1_000_000)
    ubatch: int | None = Field(None, ge=1, le=1_000_000)
    threads: int | None = Field(None, ge=1, le=4096)
    ngl: int | None = Field(None, ge=-1, le=100_000)
    fa: bool | None = None
    ctk: str | None = Field(None, pattern=r"^[a-zA-Z0-9_]{1,16}$")
    ctv: str | None = Field(None, pattern=r"^[a-zA-Z0-9_]{1,16}$")
    mla: int | None = Field(None, ge=0, le=3)
    amb: int | None = Field(None, ge=0, le=1_000_000)
    rtr: bool | None = None
    fmoe: bool | None = None
    ctx: int | None = Field(None, ge=1, le=10_000_000)
    nrep: int | None = Field(None, ge=1, le=1000)
    sm: Literal["none", "layer", "row", "graph"] | None = None
    ts: str | None = Field(None, pattern=r"^[0-9.]+(/[0-9.]+)*$")
    ot: str | None = Field(None, max_length=2000)
    mmap: bool | None = None


class CellSpec(_Strict):
    run_id: str
    matrix_name: str
    matrix_hash: str
    cell_id: str
    params: dict                  # the cell's axis values, for display and the record
    engine: EngineSpec
    ref: RefSpec
    model: ModelSpec
    quant: str | None = None
    tool: ToolName = "llama-bench"
    args: ToolArgs = Field(default_factory=ToolArgs)
    gpus: int | None = None       # first k GPUs visible; None = leave as is, 0 = none
    repetitions: Repetitions = Field(default_factory=Repetitions)
    hygiene: Hygiene = Field(default_factory=Hygiene)
    timeout_s: float = 1800.0
    store_url: str
    # a stored ok record with other content at this cell's key: refuse (and keep it
    # spooled), overwrite, or store beside it
    on_clash: ClashPolicy = "reject"
    # Every target the cells sharing this build need, so the build is configured and
    # compiled once; empty means just what this cell needs.
    build_targets: list[str] = Field(default_factory=list)
    # `per: class`: one result per hardware class, so an agent skips (and never stores) a
    # cell another agent of its class already recorded - a retry after a frozen agent
    # thaws leaves no duplicate
    one_per_class: bool = True
