"""The schema: the features every model sizes itself from, the labels it predicts, and the
evaluation-only fields it never sees.

Ids: 0 is padding, 1 is out-of-vocabulary, real values start at 2, so a table of
``vocab_size`` rows holds ids ``0 .. vocab_size - 1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from ranklab.errors import SchemaError

PAD, OOV = 0, 1
FIRST_ID = 2  # the first real id of every table
Kind = Literal["categorical", "numeric", "sequence", "bag", "ragged"]
Role = Literal["user", "item", "context"]
KINDS = ("categorical", "numeric", "sequence", "bag", "ragged")
POOLINGS = ("sum", "mean")


def weight_key(name: str) -> str:
    """The key of a weighted bag's (B, L) values beside its ids in ``Batch.features``."""
    return f"{name}.weight"


LABEL_KINDS = ("binary", "regression")


@dataclass(frozen=True)
class Feature:
    """One input field.

    Attributes:
        name: key in ``Batch.features``.
        kind: ``categorical`` (B,) int64 ids, ``numeric`` (B,) float32, ``sequence`` (B, L)
            int64 ids left-padded with 0; ``bag`` (B, L) int64 ids padded with 0, a
            multi-valued field (tags, a libFM line's tokens) pooled into one field embedding,
            with (B, L) float32 values under ``weight_key(name)`` if ``weighted``; ``ragged``
            (evaluation fields only): rows of any length, a :class:`ranklab.data.batch.Ragged`.
        vocab_size: rows of its embedding table (ids 0..vocab_size-1); 0 for numeric.
        table: embedding table name; features with the same table share one embedding
            (e.g. the target item and the items in the history). Defaults to ``name``.
        max_len: L for sequences and bags, 0 otherwise.
        role: user, item or context.
        sequence: for a side field of a history (e.g. categories of the history items),
            the name of the sequence feature it is aligned with; None otherwise.
        pooling: a bag's pooling of its items' embeddings: ``sum`` (weighted by the values if
            ``weighted``, as libFM's linear and embedding terms are) or ``mean`` (over the
            row's items).
        weighted: a bag carries a value per item (libFM ``index:value``).
    """

    name: str
    kind: Kind
    vocab_size: int = 0
    table: str | None = None
    max_len: int = 0
    role: Role = "context"
    sequence: str | None = None
    pooling: str = "sum"
    weighted: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SchemaError(
                f"feature '{self.name}': kind must be one of {KINDS}, not {self.kind}"
            )
        if self.kind != "numeric" and self.table is None:
            object.__setattr__(self, "table", self.name)
        if self.kind in ("sequence", "bag") and self.max_len < 1:
            raise SchemaError(f"feature '{self.name}': max_len must be >= 1, got {self.max_len}")
        if self.pooling not in POOLINGS:
            raise SchemaError(
                f"feature '{self.name}': pooling must be one of {POOLINGS}, not {self.pooling}"
            )


@dataclass(frozen=True)
class LabelSpec:
    """One label a model predicts.

    Attributes:
        name: key in ``Batch.labels`` (and in metric names: ``val/<name>/auc``).
        kind: ``binary`` (0/1, a logit per row, binary cross-entropy) or ``regression``
            (a real value, squared error).
        weight: the label's weight in the training loss (sum over labels of weight * loss).
        condition: the label is observed only where this other (binary) label is 1, e.g. a
            conversion only after a click: its loss and metrics use those rows, and the joint
            event (``condition`` and this label) is evaluated over every row as ``joint``.
        joint: the joint event's name in metrics (default ``<condition>_<name>``; "ctcvr").
    """

    name: str
    kind: str = "binary"
    weight: float = 1.0
    condition: str | None = None
    joint: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise SchemaError(
                f"label '{self.name}': kind must be one of {LABEL_KINDS}, not {self.kind}"
            )
        if self.condition is not None and self.joint is None:
            object.__setattr__(self, "joint", f"{self.condition}_{self.name}")


@dataclass(frozen=True)
class Schema:
    """All features of a dataset, its labels (in order), the group id (for grouped AUC), and
    the evaluation-only fields (a retrieval user's seen items and sampled negatives, a
    synthetic label's counterfactual), which batches carry apart from the features."""

    features: tuple[Feature, ...]
    labels: tuple[LabelSpec, ...] = (LabelSpec("label"),)
    group: str | None = None
    evaluation: tuple[Feature, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SchemaError(f"duplicate feature names: {sorted(dup)}")
        if any(f.kind == "ragged" for f in self.features):
            raise SchemaError("ragged fields are evaluation-only (Schema.evaluation)")
        label_names = [lb.name for lb in self.labels]
        if len(set(label_names)) != len(label_names):
            raise SchemaError(f"duplicate label names: {label_names}")
        for f in self.features:
            if f.sequence is not None and (
                f.sequence not in names or self[f.sequence].kind != "sequence"
            ):
                raise SchemaError(f"feature '{f.name}': aligned sequence '{f.sequence}' not found")

    def check_conditions(self, key: str = "data.source.labels") -> None:
        """Each condition names another binary label of the data (sources call this; a schema
        restricted with :meth:`with_labels` may keep a label without its condition's)."""
        from ranklab.errors import ConfigError

        for lb in self.labels:
            if lb.condition is None:
                continue
            if lb.condition not in self.label_names or lb.condition == lb.name:
                raise ConfigError(
                    key,
                    f"label '{lb.name}': its condition '{lb.condition}' is not another label "
                    f"(labels: {self.label_names})",
                )
            if self.label_spec(lb.condition).kind != "binary":
                raise ConfigError(
                    key, f"label '{lb.name}': condition '{lb.condition}' is not binary"
                )

    # -- labels -------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return [lb.name for lb in self.labels]

    def label_spec(self, name: str) -> LabelSpec:
        for lb in self.labels:
            if lb.name == name:
                return lb
        raise SchemaError(f"the data has no label '{name}'; it has {self.label_names}")

    def with_labels(self, names: Iterable[str] | None, key: str = "task.labels") -> Schema:
        """The schema restricted to ``names`` (None: all), failing on a label the data lacks
        (naming ``key``). A kept label whose condition is dropped stays conditional: its loss
        and metrics still use the rows where the condition holds."""
        if names is None:
            return self
        names = list(names)
        missing = [n for n in names if n not in self.label_names]
        if missing or not names:
            from ranklab.errors import ConfigError

            raise ConfigError(
                key, f"labels {missing or names} not in the data (labels: {self.label_names})"
            )
        kept = tuple(self.label_spec(n) for n in names)
        # metrics keep per-label names when the data has several labels, whatever is trained
        meta = {**self.meta, "data_labels": self.meta.get("data_labels", self.label_names)}
        return replace(self, labels=kept, meta=meta)

    def evaluation_field(self, name: str) -> Feature | None:
        return next((f for f in self.evaluation if f.name == name), None)

    # -- lookup -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SchemaError(
            f"the data has no feature '{name}'; it has {[f.name for f in self.features]}"
        )

    def __contains__(self, name: str) -> bool:
        return any(f.name == name for f in self.features)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def of_kind(self, *kinds: Kind) -> list[Feature]:
        return [f for f in self.features if f.kind in kinds]

    @property
    def categorical(self) -> list[Feature]:
        return self.of_kind("categorical")

    @property
    def numeric(self) -> list[Feature]:
        return self.of_kind("numeric")

    @property
    def sequences(self) -> list[Feature]:
        return self.of_kind("sequence")

    @property
    def bags(self) -> list[Feature]:
        return self.of_kind("bag")

    @property
    def tables(self) -> dict[str, int]:
        """Embedding table name -> rows (the largest vocabulary among features sharing it)."""
        out: dict[str, int] = {}
        for f in self.features:
            if f.kind != "numeric":
                out[f.table] = max(out.get(f.table, 0), f.vocab_size)
        return out

    def require(self, names: Iterable[str], kind: Kind | None = None, model: str = "") -> None:
        """Fail with a message naming the first missing field (or wrong kind)."""
        who = f"model {model} " if model else ""
        for n in names:
            if n not in self:
                raise SchemaError(
                    f"{who}needs feature '{n}', which the data does not have "
                    f"(features: {self.names})"
                )
            if kind is not None and self[n].kind != kind:
                raise SchemaError(f"{who}needs '{n}' to be {kind}, it is {self[n].kind}")

    def target_for(self, seq: Feature) -> Feature | None:
        """The non-sequence categorical feature sharing a sequence's table (the target item)."""
        for f in self.categorical:
            if f.table == seq.table:
                return f
        return None

    # -- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "features": [asdict(f) for f in self.features],
            "labels": [asdict(lb) for lb in self.labels],
            "group": self.group,
            "evaluation": [asdict(f) for f in self.evaluation],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        labels = d.get("labels")
        if labels is None:  # written before several labels existed: one binary label
            labels = [{"name": d.get("label", "label")}]
        return cls(
            features=tuple(Feature(**f) for f in d["features"]),
            labels=tuple(LabelSpec(**lb) for lb in labels),
            group=d.get("group"),
            evaluation=tuple(Feature(**f) for f in d.get("evaluation", [])),
            meta=d.get("meta", {}),
        )

    def save(self, path: str | Path) -> None:
        from ranklab.utils import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        return cls.from_dict(json.loads(Path(path).read_text()))
