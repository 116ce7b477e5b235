"""Ranking (CTR, sequence-aware, multi-task): one loss and one set of metrics per label."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from ranklab.data.batch import Batch
from ranklab.data.schema import LabelSpec, Schema
from ranklab.errors import ConfigError
from ranklab.losses import LabelLoss, default_loss, observed
from ranklab.metrics import CTRMetrics
from ranklab.tasks.base import BaseTask

MULTI_TASK_MODELS = "shared_bottom, mmoe, ple, esmm"


def split_output(
    out: Tensor | dict[str, Any], labels: list[str]
) -> tuple[dict[str, Tensor], Tensor | None]:
    """A model's output -> (logits by label, summed auxiliary losses or None).

    The contract: a (B,) tensor for one label; a dict by label for several; either may be
    wrapped as ``{"logits": ..., "<name>_loss": scalar, ...}`` to add auxiliary losses.
    """
    aux = None
    if isinstance(out, dict) and "logits" in out:
        extra = [v for k, v in out.items() if k.endswith("_loss")]
        aux = sum(extra) if extra else None
        out = out["logits"]
    if isinstance(out, dict):
        return out, aux
    return {labels[0]: out}, aux


class RegressionMetrics(nn.Module):
    """MSE and MAE of a regression label (torchmetrics: exact under DDP)."""

    def __init__(self) -> None:
        super().__init__()
        self.mse, self.mae = MeanSquaredError(), MeanAbsoluteError()

    def update(self, preds: Tensor, target: Tensor, groups: Tensor | None = None) -> None:
        self.mse.update(preds, target)
        self.mae.update(preds, target)

    def compute(self) -> dict[str, float]:
        return {"mse": float(self.mse.compute()), "mae": float(self.mae.compute())}

    def reset(self) -> None:
        self.mse.reset()
        self.mae.reset()


class LabelMetrics(nn.Module):
    """Every label's metrics for one stage (val or test).

    Binary labels: AUC, log loss, NE, calibration and grouped AUC; regression: MSE, MAE. A
    conditional label is scored on the rows where it is observed (``conversion/auc``) and, when
    its condition is predicted too, the joint event over every row (``ctcvr/auc``: p(condition)
    x p(label | condition) against condition x label). A label with a counterfactual in the
    data (synthetic data: the conversion each row would have had if clicked) is also scored
    against it over every row (``conversion/counterfactual/auc``). Data with one label keep the
    plain names (``auc``); data with several get ``<label>/...`` (also when ``task.labels``
    trains on one of them) plus the mean over the trained labels that have a metric under its
    plain name (``auc``: the binary labels').
    """

    def __init__(
        self,
        specs: tuple[LabelSpec, ...],
        counterfactual: Mapping[str, str],
        grouped: bool,
        plain: bool = True,
    ) -> None:
        super().__init__()
        self.specs = specs
        self.plain = plain
        self.names = [s.name for s in specs]
        self.counterfactual = {k: v for k, v in counterfactual.items() if k in self.names}
        self.per_label = nn.ModuleDict(
            {
                s.name: CTRMetrics(grouped) if s.kind == "binary" else RegressionMetrics()
                for s in specs
            }
        )
        self.joint = nn.ModuleDict(
            {s.joint: CTRMetrics(grouped) for s in specs if s.condition in self.names}
        )
        self.cf = nn.ModuleDict({n: CTRMetrics(False) for n in self.counterfactual})
        self._cf_seen: set[str] = set()

    def update(
        self,
        preds: dict[str, Tensor],
        labels: dict[str, Tensor],
        group: Tensor | None,
        evaluation: Mapping[str, Any],
    ) -> None:
        for s in self.specs:
            p, y = preds[s.name], labels[s.name]
            rows = observed(labels, s)
            if rows is None:
                self.per_label[s.name].update(p, y, group)
            else:
                self.per_label[s.name].update(
                    p[rows], y[rows], None if group is None else group[rows]
                )
                if s.joint in self.joint:
                    joint_y = labels[s.condition] * y
                    self.joint[s.joint].update(preds[s.condition] * p, joint_y, group)
            cf = self.counterfactual.get(s.name)
            if cf is not None and cf in evaluation:  # the synthetic test split carries it
                self.cf[s.name].update(p, evaluation[cf].float())
                self._cf_seen.add(s.name)

    def compute(self) -> dict[str, float]:
        if self.plain:  # single-label data: the plain names of every earlier run
            return self.per_label[self.names[0]].compute()
        out: dict[str, float] = {}
        per = {n: m.compute() for n, m in self.per_label.items()}
        for n, values in per.items():
            out.update({f"{n}/{k}": v for k, v in values.items()})
        for n, m in self.joint.items():
            out.update({f"{n}/{k}": v for k, v in m.compute().items()})
        for n, m in self.cf.items():
            if n in self._cf_seen:
                out.update({f"{n}/counterfactual/{k}": v for k, v in m.compute().items()})
        # the mean over the labels that have the metric (what `val/auc` monitors): a regression
        # label beside binary ones has no AUC, and the binary ones no MSE
        for k in sorted({k for v in per.values() for k in v}):
            having = [n for n in per if k in per[n]]
            out[k] = sum(per[n][k] for n in having) / len(having)
        return out

    def reliability(self) -> dict[str, Any]:
        names = [n for n, m in self.per_label.items() if isinstance(m, CTRMetrics)]
        out = {}
        for n in names:
            out[n] = self.per_label[n].reliability()
        return out

    def reset(self) -> None:
        for group in (self.per_label, self.joint, self.cf):
            for m in group.values():
                m.reset()
        self._cf_seen.clear()


class RankingTask(BaseTask):
    """Ranking: each label's loss (binary cross-entropy or squared error by its kind, or any
    ``task.losses.<label>`` module), weighted and summed; metrics per label.

    Extra args: ``schema`` (the labels, their conditions and counterfactuals);
    ``aux_loss_weight`` weighs auxiliary losses a model returns (e.g. DIEN's);
    ``grouped_metrics`` computes grouped AUC over the schema's group (e.g. users);
    ``labels`` the labels trained on (null: all of the data's; the model is built for these);
    ``losses`` label -> loss config (``{_target_: ranklab.losses.EntireSpace}``); ``loss_weights``
    label -> weight (default: the data's). Other args: :class:`BaseTask`.
    """

    family = ("ctr", "sequence", "multitask")

    def __init__(
        self,
        model: nn.Module,
        schema: Schema | None = None,
        aux_loss_weight: float = 1.0,
        grouped_metrics: bool = True,
        labels: list[str] | None = None,
        losses: Mapping[str, Any] | None = None,
        loss_weights: Mapping[str, float] | None = None,
        output_bias: str = "zero",
        base_rates: Mapping[str, float] | None = None,
        **base: Any,
    ) -> None:
        super().__init__(model, **base)
        if output_bias not in ("zero", "base_rate"):
            raise ConfigError("task.output_bias", f"must be zero or base_rate, not {output_bias!r}")
        specs = schema.labels if schema is not None else (LabelSpec("label"),)
        names = [s.name for s in specs]
        if not specs:  # next-item data (user histories, no labelled rows): an IndexError
            raise ConfigError(
                "task",
                f"the data has no labels to rank by (next-item data: user histories and target "
                f"items); {type(model).__name__} ranks labelled rows: choose task=retrieval "
                f"with a retrieval model (e.g. model=sasrec), or data with labels",
            )
        if len(specs) > 1 and not getattr(model, "multi_label", False):
            raise ConfigError(
                "task.labels",
                f"{type(model).__name__} predicts one label and the data has {names}: train "
                f"on one (task.labels=[{names[0]}]) or choose a multi-task model "
                f"({MULTI_TASK_MODELS})",
            )
        for key, given in (("task.losses", losses), ("task.loss_weights", loss_weights)):
            unknown = sorted(set(given or {}) - set(names))
            if unknown:
                raise ConfigError(f"{key}.{unknown[0]}", f"not a label of this run ({names})")
        self.specs = specs
        self.label_names = names
        self.losses = nn.ModuleDict(
            {s.name: self._loss(s, (losses or {}).get(s.name)) for s in specs}
        )
        for s in specs:  # a loss that cannot train its label: named now, not at the first step
            check = getattr(self.losses[s.name], "check", None)  # a user's loss may have none
            why = check(s, names) if check is not None else None
            if why is not None:
                key = f"task.losses.{s.name}" if s.name in (losses or {}) else "model"
                raise ConfigError(key, why)
        self.weights = {s.name: float((loss_weights or {}).get(s.name, s.weight)) for s in specs}
        self.binary = {s.name: s.kind == "binary" for s in specs}
        meta = schema.meta if schema is not None else {}
        counterfactual = meta.get("counterfactual") or {}
        plain = len(meta.get("data_labels", names)) == 1  # one label in the data: `auc`
        self.val_metrics = LabelMetrics(specs, counterfactual, grouped_metrics, plain)
        self.test_metrics = LabelMetrics(specs, counterfactual, grouped_metrics, plain)
        self.reliability: dict[str, Any] | None = None
        # output_bias: base_rate: each binary label's logit starts at the log-odds of its
        # training rate. A constant added to the logit is exactly an output bias initialised
        # there (gradients are unchanged), for every model, wherever it keeps its own bias.
        self.offsets: dict[str, float] = {}
        if output_bias == "base_rate":
            for name, rate in (base_rates or {}).items():
                p = min(max(float(rate), 1e-6), 1 - 1e-6)
                self.offsets[name] = math.log(p / (1 - p))

    def _logits(self, features: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
        logits, aux = split_output(self.model(features), self.label_names)
        if self.offsets:
            logits = {n: x + self.offsets[n] if n in self.offsets else x for n, x in logits.items()}
        return logits, aux

    def _loss(self, spec: LabelSpec, conf: Any) -> LabelLoss:
        if conf is not None:
            return instantiate(conf)
        suggest = getattr(self.model, "loss_for", None)  # e.g. ESMM: the entire-space loss
        return (suggest(spec) if suggest is not None else None) or default_loss(spec)

    def forward(self, features: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        return self.model(features)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, aux = self._logits(batch.features)
        loss: Tensor | None = None
        log_parts = len(self.losses) > 1 and self.logs_this_step()
        for name, fn in self.losses.items():
            part = fn(logits, batch.labels, self.specs[self.label_names.index(name)])
            if log_parts:
                self.log(f"train/{name}/loss", part, batch_size=len(batch))
            part = part * self.weights[name] if self.weights[name] != 1.0 else part
            loss = part if loss is None else loss + part
        assert loss is not None
        total = loss + self.regularization()
        if aux is not None:
            total = total + self.hparams.aux_loss_weight * aux
        self.add_loss(loss, len(batch))
        return self.guard(total)

    def predictions(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per label (B,): a probability (binary labels) or a value (regression)."""
        logits, _ = self._logits(features)
        return {
            n: torch.sigmoid(logits[n].float()) if self.binary[n] else logits[n].float()
            for n in self.label_names
        }

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        preds = self.predictions(batch.features)
        self.val_metrics.update(preds, batch.labels, batch.group, batch.eval)

    def on_validation_epoch_end(self) -> None:
        self.record("val", self.val_metrics.compute(), prog_bar=("auc",))
        self.val_metrics.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        preds = self.predictions(batch.features)
        self.test_metrics.update(preds, batch.labels, batch.group, batch.eval)

    def on_test_epoch_end(self) -> None:
        self.record("test", self.test_metrics.compute())
        curves = self.test_metrics.reliability()  # for calibration plots
        if len(self.label_names) == 1:
            self.reliability = {"test": next(iter(curves.values()))} if curves else None
        else:
            self.reliability = {f"test/{n}": r for n, r in curves.items()}
        self.test_metrics.reset()

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor | dict[str, Tensor]:
        preds = self.predictions(batch.features)
        return preds[self.label_names[0]] if len(preds) == 1 else preds
