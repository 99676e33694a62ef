"""Training recipes: a YAML file plus `key=value` overrides, checked whole into a typed config.

`load_config(cls, path, overrides)` reads the YAML mapping, applies the overrides (dotted keys reach
into nested mappings; values are YAML scalars, so `lr=3e-4`, `compile=true`, `betas=[0.9,0.95]`
work), then checks every field against the dataclass's type hints and the config's own `problems()`
— before any weights or memory are touched — and raises one `ConfigError` that lists every problem
(unknown keys with a did-you-mean, wrong types, missing files, inconsistent batch settings).

`TrainConfig` holds what the one loop needs; each recipe's config subclasses it with its own fields
(model, data, ...). Relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from llama2.errors import ConfigError
from llama2.model.cpu_kernels import CpuKernels

C = TypeVar("C", bound="TrainConfig")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-4` as a float (YAML 1.1 insists on a dot: `3.0e-4`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(kw_only=True)
class TrainConfig:
    """Settings of the one training loop (`llama2.train.loop.train`), shared by every recipe.

    Batch: each rank runs `grad_accum` micro-batches of `batch_size` examples per optimizer step.
    Give `global_batch_size` (examples per step over all ranks) instead of `grad_accum` to keep a
    recipe's step the same on any number of GPUs: `grad_accum = global_batch_size / (batch_size *
    world_size)`, which must divide evenly.
    """

    output_dir: str
    max_steps: int
    seed: int = 0
    batch_size: int = 8
    grad_accum: int | None = None
    global_batch_size: int | None = None
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    grad_clip: float = 1.0
    eval_every: int = 0
    eval_batches: int = 8
    save_every: int = 0
    keep_last: int = 2
    log_every: int = 10
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    compile: bool = False
    cpu_kernels: CpuKernels = "auto"
    keep_freed_memory: bool = True
    activation_checkpointing: bool = False
    resume: str = "auto"
    device: str = "auto"
    peak_flops: float | None = None
    tensorboard: bool = True

    def problems(self, world_size: int) -> list[str]:
        """Everything wrong with the values (types are already checked); empty when usable."""
        found = []
        for name in ("max_steps", "batch_size", "log_every", "keep_last"):
            if getattr(self, name) <= 0:
                found.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every", "weight_decay", "grad_clip", "seed"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.lr <= 0 or self.eps <= 0:
            found.append(f"lr and eps must be positive, got lr={self.lr}, eps={self.eps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            found.append(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            found.append(f"betas must lie in [0, 1), got {list(self.betas)}")
        if self.eval_every and self.eval_batches <= 0:
            found.append(f"eval_every is {self.eval_every} but eval_batches is {self.eval_batches}; set eval_batches >= 1 or eval_every=0")
        if not self.output_dir:
            found.append("output_dir is empty; give the folder for checkpoints and logs")
        if self.resume not in ("auto", "never") and not Path(self.resume).is_dir():
            found.append(f"resume must be auto, never or a checkpoint folder; {self.resume} is not a folder")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            found.append(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        found.extend(self._batch_problems(world_size))
        return found

    def _batch_problems(self, world_size: int) -> list[str]:
        if self.grad_accum is not None and self.grad_accum <= 0:
            return [f"grad_accum must be positive, got {self.grad_accum}"]
        if self.global_batch_size is None or self.batch_size <= 0:
            return []
        per_step = self.batch_size * world_size
        accum, remainder = divmod(self.global_batch_size, per_step)
        if remainder or accum == 0:
            return [f"global_batch_size {self.global_batch_size} is not a multiple of batch_size {self.batch_size} "
                    f"x {world_size} process(es) = {per_step}"]
        if self.grad_accum is not None and self.grad_accum != accum:
            return [f"grad_accum {self.grad_accum} disagrees with global_batch_size {self.global_batch_size} / "
                    f"(batch_size {self.batch_size} x {world_size} process(es)) = {accum}; give only one of them"]
        return []

    def resolved(self: C, world_size: int) -> C:
        """A copy with `grad_accum` worked out (from `global_batch_size` when that is given)."""
        if self.global_batch_size is not None:
            return dataclasses.replace(self, grad_accum=self.global_batch_size // (self.batch_size * world_size))
        return dataclasses.replace(self, grad_accum=self.grad_accum or 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a recipe YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read recipe {path}: {error.strerror}; give the path of a recipe YAML file") from error
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from error
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a mapping of key: value, got a {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `dotted.key=value` set; values are parsed as YAML scalars or lists."""
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value; write e.g. max_steps=100 or model.n_layers=4")
        try:
            value = yaml.load(text, Loader=_Loader) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({getattr(error, 'problem', error)})") from error
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: {part} is {node[part]!r}, not a mapping; "
                                  f"set the whole of it instead, e.g. {part}={{preset: tiny, {leaf}: ...}}")
            node = node[part]
        node[leaf] = value
    return result


def load_config(cls: type[C], path: str | os.PathLike[str] | None, overrides: list[str], *, world_size: int = 1) -> C:
    """Read, override and check a recipe into `cls`; `path=None` starts from an empty mapping."""
    raw = read_recipe(path) if path is not None else {}
    source = str(path) if path is not None else "recipe"
    return parse_config(cls, apply_overrides(raw, overrides), source=source, world_size=world_size)


def parse_config(cls: type[C], raw: dict[str, Any], *, source: str = "recipe", world_size: int = 1) -> C:
    """Check `raw` against `cls` and return the config with `grad_accum` resolved.

    Raises one `ConfigError` naming every problem: unknown keys (with the closest valid name),
    missing required keys, values of the wrong type, then `cls.problems(world_size)`.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems = []
    for key in raw:
        if key not in fields:
            problems.append(f"unknown key {key!r}{did_you_mean(str(key), fields)}")
    values = {}
    for name, field in fields.items():
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                problems.append(f"missing required key {name!r}")
            continue
        value, ok = coerce(raw[name], hints[name])
        if ok:
            values[name] = value
        else:
            problems.append(f"{name} must be {describe(hints[name])}, got {raw[name]!r}")
    if not problems:
        config = cls(**values)
        problems = config.problems(world_size)
        if not problems:
            return config.resolved(world_size)
    count = f"{len(problems)} problems" if len(problems) > 1 else "a problem"
    raise ConfigError(f"{source} has {count}: " + "; ".join(problems))


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest of `choices`, or `""` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(value: Any, hint: Any) -> tuple[Any, bool]:
    """`(value converted to hint, True)` when `value` fits the type hint, else `(value, False)`.

    Ints are accepted for floats and lists for tuples; bools are never taken for numbers.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            converted, ok = coerce(value, option)
            if ok:
                return converted, True
        return value, False
    if origin is Literal:
        return value, value in args
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return value, False
        items = [coerce(item, arg) for item, arg in zip(value, args)]
        return tuple(item for item, _ in items), all(ok for _, ok in items)
    if origin is dict:
        return value, isinstance(value, dict)
    if origin is list:  # items are the recipe's to check (e.g. data files with weights)
        return value, isinstance(value, list)
    if hint is type(None):
        return value, value is None
    if hint is bool:
        return value, isinstance(value, bool)
    if hint is int:
        return value, isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value) if ok else value), ok
    if hint is str:
        return value, isinstance(value, str)
    return value, isinstance(value, hint)


def describe(hint: Any) -> str:
    """A type hint in words: `an integer`, `one of 'auto', 'float32'`, `a list of 2 numbers or null`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple:
        return f"a list of {len(args)} {'numbers' if all(a is float for a in args) else 'values'}"
    if origin is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value
