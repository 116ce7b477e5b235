"""The feature schema: what every model sizes itself from.

Ids: 0 is padding, 1 is out-of-vocabulary, real values start at 2, so a table of
``vocab_size`` rows holds ids ``0 .. vocab_size - 1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ranklab.errors import SchemaError

PAD, OOV = 0, 1
Kind = Literal["categorical", "numeric", "sequence"]
Role = Literal["user", "item", "context"]
KINDS = ("categorical", "numeric", "sequence")


@dataclass(frozen=True)
class Feature:
    """One input field.

    Attributes:
        name: key in ``Batch.features``.
        kind: ``categorical`` (B,) int64 ids, ``numeric`` (B,) float32, ``sequence`` (B, L)
            int64 ids left-padded with 0.
        vocab_size: rows of its embedding table (ids 0..vocab_size-1); 0 for numeric.
        table: embedding table name; features with the same table share one embedding
            (e.g. the target item and the items in the history). Defaults to ``name``.
        max_len: L for sequences, 0 otherwise.
        role: user, item or context.
        sequence: for a side field of a history (e.g. categories of the history items),
            the name of the sequence feature it is aligned with; None otherwise.
    """

    name: str
    kind: Kind
    vocab_size: int = 0
    table: str | None = None
    max_len: int = 0
    role: Role = "context"
    sequence: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SchemaError(
                f"feature '{self.name}': kind must be one of {KINDS}, not {self.kind}"
            )
        if self.kind != "numeric" and self.table is None:
            object.__setattr__(self, "table", self.name)
        if self.kind == "sequence" and self.max_len < 1:
            raise SchemaError(f"feature '{self.name}': max_len must be >= 1, got {self.max_len}")


@dataclass(frozen=True)
class Schema:
    """All features of a dataset, plus the label and the group id (for grouped AUC)."""

    features: tuple[Feature, ...]
    label: str = "label"
    group: str | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SchemaError(f"duplicate feature names: {sorted(dup)}")
        for f in self.features:
            if f.sequence is not None and (
                f.sequence not in names or self[f.sequence].kind != "sequence"
            ):
                raise SchemaError(f"feature '{f.name}': aligned sequence '{f.sequence}' not found")

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
            "label": self.label,
            "group": self.group,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        return cls(
            features=tuple(Feature(**f) for f in d["features"]),
            label=d.get("label", "label"),
            group=d.get("group"),
            meta=d.get("meta", {}),
        )

    def save(self, path: str | Path) -> None:
        from ranklab.utils import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        return cls.from_dict(json.loads(Path(path).read_text()))
