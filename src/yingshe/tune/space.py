"""The search space file: which config keys a study varies, and how.

A space is a YAML mapping from a config key (dotted, or a bare name when unique, exactly as
`key=value` overrides are resolved) to either a plain list, the grid of values to try, or a
distribution:

    lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
    momentum: {type: uniform, low: 0.8, high: 0.99}
    epochs: {type: int, low: 1, high: 5}          # optional step, log
    model.name: {type: categorical, choices: [seed-cnn, resnet8]}
    batch_size: [32, 64, 128]                     # a grid
    lr: {type: loguniform, around: 3.0e-3, decades: 1}   # 3e-4 … 3e-2
    lr: {type: loguniform, around: lr-find, decades: 1}  # centred on `yingshe lr-find`'s suggestion

Everything is checked when the file is read, before any trial: unknown keys, values of the wrong
type for the key, bad bounds, and a grid given to a sampler that does not walk grids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yingshe.config import RunConfig, resolve_key, set_value
from yingshe.errors import YingsheError

DISTRIBUTIONS = ("loguniform", "uniform", "int", "categorical")
LR_FIND = "lr-find"  # `around: lr-find` centres a range on the range test's suggestion


@dataclass
class Param:
    """One varied key: `kind` is grid, loguniform, uniform, int or categorical."""

    key: str  # dotted config key, e.g. optim.lr
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list[Any] = field(default_factory=list)  # grid values or categorical choices
    around: Any = None  # a number or "lr-find": the centre of a log range, resolved later
    decades: float = 1.0  # with `around`: the range spans this many decades either side


@dataclass
class SearchSpace:
    params: list[Param]
    source: str

    @property
    def is_grid(self) -> bool:
        return all(p.kind == "grid" for p in self.params)

    @property
    def has_grid(self) -> bool:
        return any(p.kind == "grid" for p in self.params)

    def grid(self) -> dict[str, list[Any]]:
        """The grid as GridSampler takes it: key → values."""
        return {p.key: list(p.choices) for p in self.params}

    def grid_size(self) -> int:
        size = 1
        for p in self.params:
            size *= len(p.choices)
        return size

    def needs_lr_find(self) -> bool:
        return any(p.around == LR_FIND for p in self.params)

    def centre(self, lr: float) -> None:
        """Fill `around: lr-find` ranges with the range test's suggestion."""
        for p in self.params:
            if p.around == LR_FIND:
                p.low, p.high = lr / 10**p.decades, lr * 10**p.decades


def load_space(path: str | Path, sampler: str | None = None) -> SearchSpace:
    """Read and check a search-space YAML file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise YingsheError(f"search space {path} does not exist", "give the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise YingsheError(f"{path} is not valid YAML: {err}", "fix the syntax at that line") from err
    return parse_space(raw, str(path), sampler)


def parse_space(raw: Any, source: str = "space", sampler: str | None = None) -> SearchSpace:
    if not isinstance(raw, dict) or not raw:
        raise YingsheError(
            f"{source} must be a mapping of config keys to lists or distributions",
            "write e.g. `lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}`",
        )
    probe = RunConfig()
    params, seen = [], set()
    for key, spec in raw.items():
        dotted = resolve_key(probe, str(key))
        if dotted in seen:
            raise YingsheError(f"{source}: {dotted} is given twice", "keep one entry per key")
        seen.add(dotted)
        param = parse_param(dotted, spec, f"{source}: {key}")
        check_values(probe, param, f"{source}: {key}")
        params.append(param)
    space = SearchSpace(params, source)
    check_sampler(space, sampler)
    return space


def parse_param(key: str, spec: Any, where: str) -> Param:
    if isinstance(spec, list):
        if not spec:
            raise YingsheError(f"{where}: the grid is empty", "list at least one value")
        scalar_choices(spec, where)
        return Param(key, "grid", choices=list(spec))
    if not isinstance(spec, dict) or "type" not in spec:
        raise YingsheError(
            f"{where}: expected a list (a grid) or a mapping with `type`, got {spec!r}",
            "write a list, or {type: " + "|".join(DISTRIBUTIONS) + ", ...}",
        )
    kind = spec["type"]
    if kind not in DISTRIBUTIONS:
        raise YingsheError(f"{where}: unknown distribution {kind!r}", "use " + ", ".join(DISTRIBUTIONS))
    allowed = {
        "categorical": {"type", "choices"},
        "int": {"type", "low", "high", "step", "log"},
    }.get(kind, {"type", "low", "high", "around", "decades"})
    unknown = set(spec) - allowed
    if unknown:
        raise YingsheError(
            f"{where}: {kind} takes {', '.join(sorted(allowed))}, not {', '.join(sorted(unknown))}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise YingsheError(f"{where}: categorical needs a non-empty list `choices`")
        scalar_choices(choices, where)
        return Param(key, kind, choices=list(choices))
    if "around" in spec:
        return around_param(key, kind, spec, where)
    low, high = number(spec.get("low"), f"{where}.low"), number(spec.get("high"), f"{where}.high")
    if low >= high:
        raise YingsheError(f"{where}: low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise YingsheError(f"{where}: loguniform needs low > 0, got {low}", "use uniform for ranges with 0")
    if kind == "int":
        step = spec.get("step", 1)
        log = bool(spec.get("log", False))
        if not (isinstance(low, int) and isinstance(high, int) and isinstance(step, int)) or step < 1:
            raise YingsheError(f"{where}: int needs whole-number low, high and step >= 1")
        if log and (low < 1 or step != 1):
            raise YingsheError(f"{where}: a log int range needs low >= 1 and step 1")
        return Param(key, kind, low, high, step=step, log=log)
    return Param(key, kind, float(low), float(high), log=kind == "loguniform")


def around_param(key: str, kind: str, spec: dict[str, Any], where: str) -> Param:
    if kind != "loguniform" or "low" in spec or "high" in spec:
        raise YingsheError(
            f"{where}: `around` centres a loguniform range and replaces low/high",
            "write {type: loguniform, around: 3.0e-3, decades: 1} (or around: lr-find)",
        )
    decades = number(spec.get("decades", 1), f"{where}.decades")
    if decades <= 0:
        raise YingsheError(f"{where}: decades must be > 0, got {decades}")
    centre = spec["around"]
    param = Param(key, kind, log=True, around=centre, decades=float(decades))
    if centre == LR_FIND:
        return param
    centre = number(centre, f"{where}.around")
    if centre <= 0:
        raise YingsheError(f"{where}: around must be > 0 (or lr-find), got {centre}")
    param.low, param.high = centre / 10**decades, centre * 10**decades
    return param


def number(value: Any, where: str) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise YingsheError(f"{where} must be a number, got {value!r}")
    return value


def scalar_choices(values: list[Any], where: str) -> None:
    """Optuna stores choices as plain scalars (None, bool, int, float, str)."""
    for value in values:
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise YingsheError(
                f"{where}: choice {value!r} is not a plain value",
                "list numbers, strings, booleans or null; vary one key of a mapping by its own key",
            )


def check_values(probe: RunConfig, param: Param, where: str) -> None:
    """Every value the parameter can take must be a valid value of its config key."""
    values = param.choices if param.choices else [v for v in (param.low, param.high) if v is not None]
    if param.kind == "int":
        values = [int(v) for v in values]
    for value in values:
        set_value(probe, param.key, value, where)


def check_sampler(space: SearchSpace, sampler: str | None) -> None:
    if sampler is None:
        return
    if sampler == "grid" and not space.is_grid:
        ranged = [p.key for p in space.params if p.kind != "grid"]
        raise YingsheError(
            f"{space.source}: the grid sampler needs a list of values for every key; "
            f"{', '.join(ranged)} {'is' if len(ranged) == 1 else 'are'} a distribution",
            "write those keys as lists, or use --sampler random or tpe",
        )
    if sampler != "grid" and space.has_grid:
        listed = [p.key for p in space.params if p.kind == "grid"]
        raise YingsheError(
            f"{space.source}: {', '.join(listed)} {'is' if len(listed) == 1 else 'are'} a grid "
            f"(a plain list), which the {sampler} sampler does not walk",
            "use --sampler grid, or write {type: categorical, choices: [...]} to sample from the list",
        )


def default_sampler(space: SearchSpace) -> str:
    """A space of lists is a grid; anything with a distribution is for TPE."""
    return "grid" if space.is_grid else "tpe"


def suggest(trial: Any, param: Param) -> Any:
    """The trial's value of `param` (an optuna.Trial)."""
    if param.kind in ("grid", "categorical"):
        return trial.suggest_categorical(param.key, param.choices)
    if param.kind == "int":
        return trial.suggest_int(
            param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log
        )
    if param.low is None:
        raise YingsheError(f"{param.key}: the range around lr-find was not resolved")
    return trial.suggest_float(param.key, param.low, param.high, log=param.log)
