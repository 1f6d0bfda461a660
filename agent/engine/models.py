"""Model files: a given path (sha256 checked), or the generated tiny Llama; quants made once.

A quantized file is cached per (source file sha256, quant type, quantize binary hash), so a
model is never quantized twice by the same tool and the record can name exactly what ran.
Which build's llama-quantize makes it is the cell spec's ``quantizer`` (one build per model
and quant, so A and B of a comparison load the same bytes), else the cell's own build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.engine import sandbox
from agent.engine.build import BuildResult, build, build_flags
from agent.spec.cellspec import EngineSpec, ModelSpec, QuantizerSpec, RefSpec
from agent.spec.registry import QUANTIZE
from agent.paths import cache_dir
from agent.engine.sources import ResolvedSource, cache_lock, resolve
from agent.engine.tinymodel import params_from_dict, write_tiny_llama

# Types whose quantization needs an importance matrix (llama-imatrix); not produced here yet.
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"}


class ModelError(RuntimeError):
    pass


@dataclass
class ModelFile:
    path: Path
    sha256: str
    source_sha256: str
    quant: str | None
    quantize_log: str | None = None


@dataclass
class Quantizer:
    """A llama-quantize binary and what the record says of the build it came from."""
    binary: Path
    binary_hash: str | None
    made_by: dict


def quantizer(engine: EngineSpec, ref: RefSpec, resolved: ResolvedSource, built: BuildResult) -> Quantizer:
    """The llama-quantize of a build that is ready (resolved and built)."""
    binary_hash = built.binary_hash.get(QUANTIZE)
    return Quantizer(built.bin(QUANTIZE), binary_hash, {
        "engine": engine.name, "kind": engine.kind, "source": engine.source(), "ref": ref.model_dump(),
        "cmake": list(engine.cmake), "repo_id": resolved.repo_id, "commit": resolved.commit,
        "build_digest": built.key.digest(), "binary_hash": binary_hash})


def shared_quantizer(spec: QuantizerSpec, gpu_devices=()) -> Quantizer:
    """The llama-quantize of the build a cell spec names: resolved and built (cached) with the
    targets it has on this agent anyway, so it is configured and compiled once.
    Raises SourceError or BuildError."""
    flags = build_flags(list(spec.engine.cmake), spec.gpus, gpu_devices)
    resolved = resolve(spec.engine.source(), spec.ref.kind, spec.ref.value)
    built = build(resolved, flags, sorted(set(spec.build_targets) | {QUANTIZE}))
    return quantizer(spec.engine, spec.ref, resolved, built)


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoized beside it by (size, mtime) - big models are slow to hash."""
    stat = path.stat()
    memo = cache_dir("sha256") / hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    if memo.is_file():
        known = json.loads(memo.read_text())
        if known.get("stamp") == stamp:
            return known["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    memo.write_text(json.dumps({"stamp": stamp, "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def source_model(spec: ModelSpec) -> Path:
    """The unquantized file of a model spec, generating the tiny model when asked."""
    if spec.generate == "tiny-llama":
        params = params_from_dict(spec.params)
        tag = hashlib.sha256(json.dumps(params.__dict__, sort_keys=True).encode()).hexdigest()[:12]
        path = cache_dir("models") / f"tiny-llama-{tag}-F32.gguf"
        with cache_lock(path.with_suffix(".lock")):
            if not path.is_file():
                write_tiny_llama(path, params)
        return path
    if not spec.path:
        raise ModelError(f"model {spec.name!r} has neither path nor generate")
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise ModelError(f"model {spec.name!r}: file {path} not found")
    if spec.sha256:
        actual = file_sha256(path)
        if actual.lower() != spec.sha256.lower():
            raise ModelError(f"model {spec.name!r}: sha256 mismatch for {path}: expected {spec.sha256}, got {actual}")
    return path


def model_file(spec: ModelSpec, quant: str | None, quantize_bin: Path | None, quantize_hash: str | None) -> ModelFile:
    source = source_model(spec)
    source_sha = file_sha256(source)
    if not quant:
        return ModelFile(source, source_sha, source_sha, None)
    if quant.upper() in NEEDS_IMATRIX:
        raise ModelError(f"quant {quant} needs an importance matrix, which hwmatrix does not make yet; "
                         "give a pre-quantized model path instead")
    if quantize_bin is None:
        raise ModelError("a quant was asked for but no llama-quantize was built")
    confined = sandbox.active()
    # An untrusted llama-quantize never writes where trusted runs take their models from.
    folder = cache_dir("sandboxed", "models", "quantized") if confined else cache_dir("models", "quantized")
    out = folder / f"{source_sha[:16]}-{quant}-{(quantize_hash or 'x')[:12]}.gguf"
    log = out.with_suffix(".log")
    with cache_lock(out.with_suffix(".lock")):
        if not out.is_file():
            # sandboxed, it may write only a scratch dir of its own, moved into place after
            scratch = Path(tempfile.mkdtemp(prefix=".quantize-", dir=folder)) if confined else folder
            tmp = scratch / (out.name + ".part")
            threads = str(os.cpu_count() or 1)
            argv = [str(quantize_bin), str(source), str(tmp), quant, threads]
            try:
                with open(log, "w") as handle:
                    try:
                        if confined:
                            argv = sandbox.wrap(argv, [scratch], [source, quantize_bin.parent], cwd=scratch,
                                                env=os.environ)     # bwrap keeps the allowlist only
                        proc = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                        code = proc.returncode
                    except (OSError, sandbox.SandboxUnavailable) as exc:
                        handle.write(f"cannot start {argv[0]}: {exc}\n")
                        code = 127
                if code != 0 or not tmp.is_file():
                    raise ModelError(f"llama-quantize {quant} failed with exit code {code}: "
                                     f"{log.read_text(errors='replace')[-500:]}")
                tmp.replace(out)
            finally:
                if confined:
                    shutil.rmtree(scratch, ignore_errors=True)
    return ModelFile(out, file_sha256(out), source_sha, quant, str(log))
