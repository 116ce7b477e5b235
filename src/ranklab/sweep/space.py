"""Search space: Hydra's sweep vocabulary, parsed by Hydra's own override parser, as Optuna
distributions.

==================================  ==========================================================
``choice(a, b, c)`` (or ``a,b,c``)  categorical over the values as Hydra parses them (lists,
                                    dicts, config-group options: ``choice(deepfm, dcnv2)``)
``range(start, stop[, step])``      the numbers Hydra's (Python's) ``range`` gives: ``stop`` is
                                    excluded; an int range becomes ``suggest_int`` with a step
``interval(low, high)``             a float in ``[low, high]``
``tag(log, interval(low, high))``   the same, sampled on a log scale (``low > 0``)
``tag(int, interval(low, high))``   an integer in ``[low, high]`` (``log`` may be added)
==================================  ==========================================================

Each parameter is named by its config key (``model.embedding_dim``), which is also its Optuna
name, so the dashboard and the trials table read like the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ranklab.errors import ConfigError

Value = None | bool | int | float | str
_PRIMITIVE = (type(None), bool, int, float, str)
_TAGS = {"log", "int"}


@dataclass(frozen=True)
class Param:
    """One searched config key.

    ``kind`` is ``choice`` (``choices`` are the Optuna values, ``texts`` the override text of
    each), ``int`` or ``float`` (``low``/``high`` inclusive, optional ``step``, ``log``).
    """

    key: str
    expr: str
    kind: str
    choices: tuple[Value, ...] = ()
    texts: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Any) -> Value:
        """Ask an ``optuna.Trial`` for this parameter's value."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def text(self, value: Value) -> str:
        """The override text of a value of this parameter (``[32,32]``, ``0.001``, ``deepfm``)."""
        if self.kind == "choice":
            for choice, text in zip(self.choices, self.texts):
                if type(choice) is type(value) and choice == value:
                    return text
            raise ValueError(f"{self.key}: {value!r} is not one of {list(self.choices)}")
        if self.kind == "int":
            return str(int(value))  # type: ignore[arg-type]
        return repr(float(value))  # type: ignore[arg-type]

    def override(self, value: Value) -> str:
        """``key=value`` as a Hydra command-line override."""
        return f"{self.key}={self.text(value)}"

    def decode(self, value: Value) -> Any:
        """The config value (a choice's list or dict, not its text) for writing configs."""
        return parse_value(self.text(value))

    def first(self) -> str:
        """Override text of one legal value (the first choice, or ``low``), for checks."""
        if self.kind == "choice":
            return self.texts[0]
        return self.text(self.low)

    def grid(self) -> list[Value]:
        """Every value, for the grid sampler (choices and ranges only)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(
                f"params.{self.key}",
                f"the grid sampler needs choice(...) or range(...), not '{self.expr}'",
            )
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step)))
        n = round((self.high - self.low) / self.step)
        return [self.low + i * self.step for i in range(n + 1)]

    def describe(self) -> str:
        """A short human form, e.g. ``float [1e-04, 1e-02] log``."""
        if self.kind == "choice":
            return f"choice {list(self.texts)}"
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.kind} [{self.low:g}, {self.high:g}]{step}{' log' if self.log else ''}"


def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_value(text: str) -> Any:
    """Parse one override value (``[16,16]``, ``0.1``, ``relu``) as Hydra would."""
    return _parser().parse_override(f"x={text}").value()


def parse_param(key: str, expr: Any) -> Param:
    """``model.dropout``, ``interval(0, 0.5)`` -> a :class:`Param`; ConfigError naming
    ``params.<key>`` for anything that is not a usable sweep."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    where = f"params.{key}"
    if not isinstance(expr, str):
        raise ConfigError(
            where, f"expected a sweep expression such as 'choice(1, 2)', got {expr!r}"
        )
    try:
        override = _parser().parse_override(f"{key}={expr}")
        value = override.value()
    except HydraException as e:
        raise ConfigError(where, f"cannot parse '{expr}': {_first_line(e)}") from None
    if override.key_or_group != key or override.package is not None:
        raise ConfigError(where, "not a config key (use dots: model.embedding_dim)")
    if not override.is_sweep_override():
        raise ConfigError(
            where,
            f"'{expr}' is a single value, not a sweep: use choice(...), range(...) or "
            f"interval(...), or put '{key}={expr}' in 'fixed'",
        )
    tags = set(getattr(value, "tags", set()) or set())
    if tags - _TAGS:
        raise ConfigError(where, f"unknown tag(s) {sorted(tags - _TAGS)} (known: log, int)")
    if getattr(value, "shuffle", False):
        raise ConfigError(where, "shuffle(...) has no meaning in a sampled sweep")

    if override.is_choice_sweep():
        if isinstance(value, ChoiceSweep) and tags:
            raise ConfigError(where, f"tags {sorted(tags)} apply to interval(...) only")
        values = list(override.sweep_iterator())
        texts = list(override.sweep_string_iterator())
        if not values:
            raise ConfigError(where, "empty choice")
        primitive = all(
            isinstance(v, _PRIMITIVE) and not (isinstance(v, float) and math.isnan(v))
            for v in values
        )
        # Optuna's categorical values must be primitives: lists and dicts go in as their text
        choices = tuple(values) if primitive else tuple(texts)
        return Param(key, expr, "choice", choices=choices, texts=tuple(texts))

    if isinstance(value, RangeSweep):
        if tags:
            raise ConfigError(where, f"tags {sorted(tags)} apply to interval(...) only")
        start, stop, step = value.start, value.stop, value.step
        if step == 0:
            raise ConfigError(where, "range step must not be 0")
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(
                where,
                f"range({start}, {stop}, {step}) is empty: its low ({start}) must be below "
                f"its high ({stop}) (the high end is excluded, as in Python)",
            )
        low, high = min(values), max(values)
        is_int = all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, step))
        if is_int:
            return Param(key, expr, "int", low=low, high=high, step=abs(step))
        return Param(key, expr, "float", low=float(low), high=float(high), step=abs(float(step)))

    if isinstance(value, IntervalSweep):
        low, high = float(value.start), float(value.end)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(where, "interval bounds must be finite")
        if low > high:
            raise ConfigError(where, f"interval low {low:g} is above its high {high:g}")
        log = "log" in tags
        if log and low <= 0:
            raise ConfigError(where, f"a log interval needs low > 0, got {low:g}")
        if "int" in tags:
            if low != int(low) or high != int(high):
                raise ConfigError(where, "tag(int, interval(...)) needs integer bounds")
            return Param(key, expr, "int", low=int(low), high=int(high), log=log)
        return Param(key, expr, "float", low=low, high=high, log=log)

    raise ConfigError(where, f"'{expr}' is not a choice, range or interval")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
