"""What the engines and their tools can do, written once: every tool argument, engine kind and tool.

The coordinator and the agent both read it. The matrix models and the cell spec's
``ToolArgs`` are built from ``ARGS``, the argv builders read each argument's spelling per
tool from it, the engine checks read ``ENGINES``, the markdown parser's column map and the
importer's key params read each argument's columns. So a new llama-bench flag is one
``ArgSpec`` below, a new tool one ``ToolSpec`` (plus its parser), a new engine fork one
``EngineKind`` (plus its cmake option table); an engine kind that is not here is refused.

Nothing is derived at import time, so a registry extended before the models are built
(as a test does) is the one they are built from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from agent.spec.cmake_options import OPTIONS as CMAKE_OPTIONS

MAINLINE, IK = "llama.cpp", "ik_llama.cpp"
BENCH, SWEEP = "llama-bench", "llama-sweep-bench"
QUANTIZE = "llama-quantize"           # the build target a cell with a quant also needs


# ---------------------------------------------------------------- how argv spells an argument

@dataclass(frozen=True)
class Valued:
    """An option with a value, ``flag value``; ``default`` is given when the cell sets none."""
    flag: str
    default: Any = None

    def argv(self, value: Any) -> list[str]:
        value = self.default if value is None else value
        return [] if value is None else [self.flag, str(value)]


@dataclass(frozen=True)
class Switch:
    """A yes/no option: what argv gets for true and for false (either may be nothing)."""
    on: tuple[str, ...]
    off: tuple[str, ...]

    def argv(self, value: Any) -> list[str]:
        return [] if value is None else list(self.on if value else self.off)


def numeric(flag: str) -> Switch:
    """llama-bench's spelling of a yes/no option: ``-fa 1`` / ``-fa 0``."""
    return Switch((flag, "1"), (flag, "0"))


# ---------------------------------------------------------------- arguments

# Value types; the matrix and the cell spec each give every one its pydantic type.
INT, BOOL, CHOICE, KV_TYPE, TENSOR_SPLIT, OVERRIDES = "int", "bool", "choice", "kv_type", "tensor_split", "overrides"


@dataclass(frozen=True)
class ArgSpec:
    """One tool argument, as a matrix names it and as each tool spells it.

    ``engines``: the engine kinds that have it (None: every kind); at its ``off`` value it
    asks nothing, so a cell for an engine without it simply leaves it out. ``value_engines``:
    values that only some kinds take. ``columns``: llama-bench's markdown headers for it;
    ``json``: its llama-bench JSON field (``json_by_engine`` where a kind names it otherwise);
    ``key_param``: whether that field tells two posted rows apart (the importer keys on it).
    """
    name: str
    type: str
    doc: str
    flags: Mapping[str, Valued | Switch]        # tool -> spelling; a tool not named never gets it
    bounds: tuple[int, int] | None = None       # INT: least and most
    choices: tuple[str, ...] = ()               # CHOICE
    max_length: int | None = None               # OVERRIDES
    aliases: tuple[str, ...] = ()
    one_per_process: bool = False               # llama-bench takes no list of values for it
    engines: tuple[str, ...] | None = None
    off: Any = None
    value_engines: Mapping[Any, tuple[str, ...]] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    json: str | None = None
    json_by_engine: Mapping[str, str] = field(default_factory=dict)
    key_param: bool = True

    @property
    def description(self) -> str:
        return self.doc + ("; one value per process" if self.one_per_process else "")


def _args(*specs: ArgSpec) -> dict[str, ArgSpec]:
    return {a.name: a for a in specs}


# In the order the matrix and the cell spec list them (their field order).
ARGS: dict[str, ArgSpec] = _args(
    ArgSpec("n_prompt", INT, "prompt tokens (-p)", {BENCH: Valued("-p")}, bounds=(0, 1_000_000),
            json="n_prompt", key_param=False),
    ArgSpec("n_gen", INT, "generated tokens (-n)", {BENCH: Valued("-n"), SWEEP: Valued("-n")},
            bounds=(0, 1_000_000), json="n_gen", key_param=False),
    ArgSpec("depth", INT, "KV depth before the test (-d, llama.cpp only)", {BENCH: Valued("-d")},
            bounds=(0, 10_000_000), engines=(MAINLINE,), off=0, json="n_depth", key_param=False),
    ArgSpec("batch", INT, "n_batch (-b; alias b)", {BENCH: Valued("-b"), SWEEP: Valued("-b")},
            bounds=(1, 1_000_000), aliases=("b",), columns=("n_batch",), json="n_batch"),
    ArgSpec("ubatch", INT, "n_ubatch (-ub; alias ub)", {BENCH: Valued("-ub"), SWEEP: Valued("-ub")},
            bounds=(1, 1_000_000), aliases=("ub",), columns=("n_ubatch",), json="n_ubatch"),
    ArgSpec("threads", INT, "threads (-t)", {BENCH: Valued("-t"), SWEEP: Valued("-t")}, bounds=(1, 4096),
            columns=("threads", "th"), json="n_threads"),
    ArgSpec("ngl", INT, "GPU layers (-ngl; -1 = all)", {BENCH: Valued("-ngl"), SWEEP: Valued("-ngl")},
            bounds=(-1, 100_000), columns=("ngl",), json="n_gpu_layers"),
    ArgSpec("fa", BOOL, "flash attention (-fa)", {BENCH: numeric("-fa"), SWEEP: Switch(("-fa", "on"), ("-fa", "off"))},
            columns=("fa",), json="flash_attn"),
    ArgSpec("ctk", KV_TYPE, "K cache type (-ctk)", {BENCH: Valued("-ctk"), SWEEP: Valued("-ctk")},
            columns=("type_k",), json="type_k"),
    ArgSpec("ctv", KV_TYPE, "V cache type (-ctv)", {BENCH: Valued("-ctv"), SWEEP: Valued("-ctv")},
            columns=("type_v",), json="type_v"),
    ArgSpec("mla", INT, "MLA mode 0-3 (-mla, ik_llama.cpp only)", {BENCH: Valued("-mla"), SWEEP: Valued("-mla")},
            bounds=(0, 3), engines=(IK,), columns=("mla",), json="mla_attn"),
    ArgSpec("amb", INT, "attention max batch MiB (-amb, ik only)", {BENCH: Valued("-amb"), SWEEP: Valued("-amb")},
            bounds=(0, 1_000_000), engines=(IK,), off=0, columns=("amb",), json="attn_max_batch"),
    ArgSpec("rtr", BOOL, "run-time repack (-rtr, ik only)", {BENCH: numeric("-rtr"), SWEEP: Switch(("-rtr",), ())},
            one_per_process=True, engines=(IK,), off=False, columns=("rtr",), json="repack"),
    ArgSpec("fmoe", BOOL, "fused MoE (-fmoe, ik only)", {BENCH: numeric("-fmoe"), SWEEP: Switch((), ("-no-fmoe",))},
            one_per_process=True, engines=(IK,), off=False, columns=("fmoe",), json="fused_moe"),
    ArgSpec("ctx", INT, "context size for llama-sweep-bench (-c)", {SWEEP: Valued("-c", default=512)},
            bounds=(1, 10_000_000)),
    ArgSpec("nrep", INT, "repetitions at zero context (-nrep)", {SWEEP: Valued("-nrep")}, bounds=(1, 1000)),
    ArgSpec("sm", CHOICE, "split mode (-sm: none|layer|row|graph)", {BENCH: Valued("-sm"), SWEEP: Valued("-sm")},
            choices=("none", "layer", "row", "graph"), value_engines={"graph": (IK,), "row": (MAINLINE,)},
            columns=("sm",), json="split_mode"),
    # The importer never keyed on tensor_split; keying on it now would change imported cell ids.
    ArgSpec("ts", TENSOR_SPLIT, "tensor split, e.g. '3/1' (-ts)", {BENCH: Valued("-ts"), SWEEP: Valued("-ts")},
            columns=("ts",), json="tensor_split", key_param=False),
    ArgSpec("ot", OVERRIDES, "tensor overrides (-ot)", {BENCH: Valued("-ot"), SWEEP: Valued("-ot")}, max_length=2000,
            columns=("ot",), json="tensor_buft_overrides", json_by_engine={IK: "override_tensor"}),
    ArgSpec("mmap", BOOL, "memory-map the model (-mmp)", {BENCH: numeric("-mmp"), SWEEP: Switch((), ("--no-mmap",))},
            columns=("mmap",), json="use_mmap"),
)


# ---------------------------------------------------------------- engine kinds

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
KV_COMMON = ("f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")


@dataclass(frozen=True)
class EngineKind:
    """An engine family: what it quantizes to, its KV cache types, its tools, how each tool's
    own warmup pass is turned off, its cmake options (ON/OFF ones, string ones), and whose
    quantized files it loads (of a quant both kinds have; the plan shares one file per quant)."""
    name: str
    quants: tuple[str, ...]
    kv_types: tuple[str, ...]
    tools: tuple[str, ...]
    no_warmup: Mapping[str, tuple[str, ...]]
    cmake: tuple[frozenset, frozenset]
    loads_files_of: tuple[str, ...] = ()         # besides its own kind's


ENGINES: dict[str, EngineKind] = {e.name: e for e in (
    EngineKind(MAINLINE, tuple(QUANTS_COMMON + QUANTS_MAINLINE_ONLY), KV_COMMON, (BENCH,),
               {BENCH: ("--no-warmup",)}, CMAKE_OPTIONS[MAINLINE]),
    EngineKind(IK, tuple(QUANTS_COMMON + QUANTS_IK_ONLY), KV_COMMON + ("q6_0", "q8_KV"), (BENCH, SWEEP),
               {BENCH: ("-w", "0"), SWEEP: ("--no-warmup",)}, CMAKE_OPTIONS[IK],
               loads_files_of=(MAINLINE,)),      # a fork loads upstream's files; upstream may not know a fork's
)}


# ---------------------------------------------------------------- tools

@dataclass(frozen=True)
class ToolSpec:
    """A benchmark tool: its cmake target, the form of its results (``output`` picks the
    parser and the metrics in ``agent.engine.tools``) and the stream it prints them on
    (``stderr``: read before stdout), the argv it always gets after the model, its
    repetitions flag (None: one repetition per process), the argv order of its options, and
    the folder under ``examples/`` that holds its source in older trees.

    ``order`` keeps the order argv has always had (records compare argv); an argument the
    tool takes that ``order`` does not name follows them, in ``ARGS`` order.
    """
    name: str
    target: str
    output: str
    stream: str
    head: tuple[str, ...]
    reps_flag: str | None
    order: tuple[str, ...]
    examples_dir: str


TOOLS: dict[str, ToolSpec] = {t.name: t for t in (
    ToolSpec(BENCH, BENCH, "llama-bench json", "stdout", ("-o", "json"), "-r",
             ("n_prompt", "n_gen", "threads", "batch", "ubatch", "ngl", "ctk", "ctv", "sm", "ts", "ot", "depth",
              "mla", "amb", "fa", "mmap", "rtr", "fmoe"), "llama-bench"),
    ToolSpec(SWEEP, SWEEP, "sweep-bench table", "stderr", (), None,
             ("ctx", "threads", "batch", "ubatch", "ngl", "ctk", "ctv", "mla", "amb", "n_gen", "nrep", "sm", "ts",
              "ot", "fa", "rtr", "fmoe", "mmap"), "sweep-bench"),
)}

# Where each build target's source lives under examples/ in trees that keep the tools there
# (ik, and mainline before mid-2025): those need LLAMA_BUILD_EXAMPLES on.
EXAMPLES_DIRS = {QUANTIZE: "quantize", **{t.name: t.examples_dir for t in TOOLS.values()}}


# ---------------------------------------------------------------- what is derived from it

def known_quants() -> tuple[str, ...]:
    """Every quant type some engine kind has, each once."""
    return tuple(dict.fromkeys(q for e in ENGINES.values() for q in e.quants))


def kv_types() -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for e in ENGINES.values() for t in e.kv_types))


def aliases() -> dict[str, str]:
    """Short spelling -> argument name (``b`` -> ``batch``)."""
    return {alias: a.name for a in ARGS.values() for alias in a.aliases}


def runs_on(kind: str, key: str, value: Any) -> bool:
    """Whether engine ``kind`` can run a cell whose ``key`` (an argument, ``quant`` or
    ``tool``) is ``value``; unset (None) runs anywhere."""
    engine = ENGINES[kind]
    if value is None:
        return True
    if key == "quant":
        return value in engine.quants
    if key == "tool":
        return value in engine.tools
    arg = ARGS.get(key)
    if arg is None:
        return True
    if arg.engines is not None and kind not in arg.engines and not is_off(arg, value):
        return False
    if arg.type == KV_TYPE and value not in engine.kv_types:
        return False
    return not arg.value_engines or kind in arg.value_engines.get(value, (kind,))


def kinds_running(key: str, value: Any) -> tuple[str, ...]:
    """The engine kinds that can run ``key`` = ``value``."""
    return tuple(kind for kind in ENGINES if runs_on(kind, key, value))


def is_off(arg: ArgSpec, value: Any) -> bool:
    """Whether ``value`` is the argument's "ask for nothing" value (False is not 0 here)."""
    return arg.off is not None and type(value) is type(arg.off) and value == arg.off


def left_out(kind: str, name: str, value: Any) -> bool:
    """Whether a cell for engine ``kind`` leaves argument ``name`` out: unset, or at its off
    value in an engine that does not have it (off is simply "not asked for" there)."""
    arg = ARGS[name]
    return value is None or (arg.engines is not None and kind not in arg.engines and is_off(arg, value))


def missing(kind: str, given: set[str]) -> tuple[set[str], tuple[str, ...]]:
    """(the ``given`` arguments engine ``kind`` does not have, the kinds that do have them)."""
    wrong = {name for name in given if ARGS[name].engines is not None and kind not in ARGS[name].engines}
    owners = tuple(k for k in ENGINES if any(k in ARGS[name].engines for name in wrong))
    return wrong, owners


def tool_argv(tool: str, kind: str, binary: str, model: str, args: Mapping[str, Any], reps: int,
              warmup: int) -> list[str]:
    """One process of ``tool`` built by engine ``kind``: the model, the tool's fixed argv, the
    repetitions, each set argument as the tool spells it, and the warmup switch."""
    spec = TOOLS[tool]
    argv = [binary, "-m", model, *spec.head]
    if spec.reps_flag:
        argv += [spec.reps_flag, str(reps)]
    listed = [name for name in spec.order if name in ARGS]
    for name in listed + [name for name in ARGS if name not in spec.order]:
        spelling = ARGS[name].flags.get(tool)
        if spelling is not None:
            argv += spelling.argv(args.get(name))
    if warmup == 0:
        argv += ENGINES[kind].no_warmup[tool]
    return argv


def json_field(arg: ArgSpec, kind: str | None) -> str | None:
    """The llama-bench JSON field of ``arg`` in engine ``kind``'s output (mainline's name when unknown)."""
    return arg.json_by_engine.get(kind, arg.json) if kind else arg.json
