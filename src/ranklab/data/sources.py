"""Tabular sources read from files: BARS-style train/valid/test splits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ranklab.data.dataset import CACHE_FORMAT, GROUP_KEY, DataSource, EncodedData
from ranklab.data.preprocess import TabularEncoder, check_binary_label, parse_feature_specs
from ranklab.data.readers import read_table, require_columns
from ranklab.errors import ConfigError, DataError
from ranklab.utils import hash_files, hash_object

SPLITS = ("train", "val", "test")


def _plain(obj: Any) -> Any:
    """OmegaConf containers -> plain Python, so options hash and serialise the same way."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


class CSVSplits(DataSource):
    """Pre-split files (train/val/test) in one directory, as BARS publishes them.

    Args:
        dir: directory holding the files (usually ``${paths.data_dir}/<dataset>``).
        files: split -> file name; splits are ``train``, ``val`` and ``test``.
        label: label column (values must be 0 or 1).
        features: ``{categorical: [...], numeric: [...], sequence: [...], min_count: 1}``;
            see :func:`ranklab.data.preprocess.parse_feature_specs`.
        group: column whose values define groups for grouped AUC (e.g. the user), or None.
        format: reader name (``csv``); ``read_options`` are passed to it.
    """

    def __init__(
        self,
        dir: str,
        files: Mapping[str, str],
        label: str,
        features: Mapping[str, Any],
        group: str | None = None,
        format: str = "csv",
        read_options: Mapping[str, Any] | None = None,
        name: str = "csv",
    ) -> None:
        self.dir = Path(dir)
        self.files = dict(_plain(files))
        missing = [s for s in SPLITS if s not in self.files]
        if missing:
            raise ConfigError(
                "data.source.files", f"needs a file for each of {SPLITS}, missing {missing}"
            )
        unknown = [s for s in self.files if s not in SPLITS]
        if unknown:
            raise ConfigError("data.source.files", f"unknown split {unknown} (splits: {SPLITS})")
        self.label, self.group, self.format, self.name = label, group, format, name
        self.features_cfg = _plain(features)
        self.specs = parse_feature_specs(self.features_cfg)
        self.read_options = dict(_plain(read_options) or {})

    def paths(self) -> dict[str, Path]:
        out = {s: self.dir / f for s, f in self.files.items()}
        for split, p in out.items():
            if not p.is_file():
                raise DataError(
                    f"{split} file not found; set paths.data_dir to the directory holding "
                    f"'{self.dir.name}/' (config key data.source.dir = {self.dir})",
                    path=str(p),
                )
        return out

    def fingerprint(self) -> str:
        paths = self.paths()
        options = {
            "format": CACHE_FORMAT,
            "reader": self.format,
            "read_options": self.read_options,
            "label": self.label,
            "group": self.group,
            "features": self.features_cfg,
        }
        return hash_object([options, hash_files([paths[s] for s in SPLITS])])[:16]

    def build(self) -> EncodedData:
        paths = self.paths()
        frames: dict[str, pl.DataFrame] = {}
        for split in SPLITS:
            df = read_table(paths[split], self.format, **self.read_options)
            cols = [self.label] + [s.column for s in self.specs]
            cols += [self.group] if self.group else []
            require_columns(df, cols, paths[split], "data.source.features")
            frames[split] = df
        encoder = TabularEncoder(self.specs).fit(frames["train"], str(paths["train"]))
        splits: dict[str, dict[str, np.ndarray]] = {}
        group_vocab = None
        for split, df in frames.items():
            arrays = encoder.transform(df, str(paths[split]))
            arrays[self.label] = check_binary_label(df, self.label, str(paths[split])).to_numpy()
            if self.group:
                # groups only need to be distinct ids; fit over all splits (no learned state)
                if group_vocab is None:
                    group_vocab = pl.concat(
                        [f[self.group].cast(pl.String) for f in frames.values()]
                    ).unique(maintain_order=True)
                arrays[GROUP_KEY] = (
                    df[self.group]
                    .cast(pl.String)
                    .replace_strict(group_vocab, range(len(group_vocab)), return_dtype=pl.Int64)
                    .to_numpy()
                )
            splits[split] = arrays
        meta = {
            "source": self.name,
            "files": {s: str(p) for s, p in paths.items()},
            "rows": {s: df.height for s, df in frames.items()},
            "base_rate": {s: float(a[self.label].mean()) for s, a in splits.items()},
        }
        return EncodedData(encoder.schema(self.label, self.group, meta), splits, meta)
