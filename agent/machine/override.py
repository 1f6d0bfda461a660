"""The HWMATRIX_PROFILE override, for tests and operations: when the variable names a JSON
or YAML file, its content is deep-merged over the probed profile (mappings merge key by
key, lists and scalars replace), and `hardware_class` is recomputed unless the file sets
it. A file that gives `gpus.devices` without `gpus.count` gets the count from the list.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from agent.machine.hwclass import hardware_class
from agent.machine.profile import HardwareProfile, ProfileError

PROFILE_ENV = "HWMATRIX_PROFILE"


def load_profile_override(path: str | os.PathLike) -> dict:
    """The override file as a mapping (JSON for *.json, YAML otherwise); ProfileError if unusable."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile override file does not exist ({PROFILE_ENV})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile override: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ProfileError(f"{path}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile override must be a mapping, not {type(data).__name__}")
    _check_keys(path, data, HardwareProfile, "")
    return data


def _check_keys(path: Path, data: dict, model: type[BaseModel], prefix: str) -> None:
    """Name unknown keys early, so a typo in an override is not silently ignored."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(model.model_fields)
            raise ProfileError(f"{path}: unknown key '{prefix}{key}' (known here: {known})")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict):
            _check_keys(path, value, sub, f"{prefix}{key}.")
        item = (get_args(sub) or (None,))[0] if get_origin(sub) is list else None
        if isinstance(item, type) and issubclass(item, BaseModel) and isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, dict):
                    _check_keys(path, entry, item, f"{prefix}{key}[{i}].")


def _deep_merge(base: dict, over: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_profile_override(profile: HardwareProfile, path: str | os.PathLike) -> HardwareProfile:
    """`profile` with the file's content merged over it (see the module docstring)."""
    over = load_profile_override(path)
    gpus = over.get("gpus")
    if isinstance(gpus, dict) and isinstance(gpus.get("devices"), list):
        gpus = dict(gpus)
        gpus.setdefault("count", len(gpus["devices"]))
        if gpus["devices"]:
            gpus.setdefault("error", None)
        over = {**over, "gpus": gpus}
    merged = _deep_merge(profile.model_dump(mode="json"), over)
    try:
        result = HardwareProfile.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ProfileError(f"{path}: invalid profile override: {problems}") from None
    if "hardware_class" not in over:
        result = result.model_copy(update={"hardware_class": hardware_class(result)})
    return result
