"""Multi-task blocks: experts, softmax gates and PLE's extraction layer.

Shapes: B rows, d input width, E experts, H expert output width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.nn.mlp import MLP


class Experts(nn.Module):
    """E independent MLPs over the same input: (B, d) -> (B, E, H).

    Example:
        >>> Experts(32, 4, [64, 16])(torch.randn(8, 32)).shape   # (8, 4, 16)
    """

    def __init__(
        self,
        in_dim: int,
        num_experts: int,
        hidden_units: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if num_experts < 1 or not hidden_units:
            raise ValueError("an expert layer needs >= 1 expert and >= 1 hidden layer")
        self.experts = nn.ModuleList(
            MLP(in_dim, hidden_units, None, dropout, batch_norm, activation)
            for _ in range(num_experts)
        )
        self.out_dim = int(hidden_units[-1])

    def __len__(self) -> int:
        return len(self.experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, H)


class Gate(nn.Module):
    """A softmax gate over E experts: (B, d) -> (B, E) weights summing to 1 (MMoE's g_k(x))."""

    def __init__(self, in_dim: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.linear(x), dim=-1)


def mix(experts: Tensor, weights: Tensor) -> Tensor:
    """Gated sum of expert outputs: experts (B, E, H), weights (B, E) -> (B, H)."""
    return torch.einsum("beh,be->bh", experts, weights)


class ExtractionLayer(nn.Module):
    """PLE's customised gate control (Tang et al., RecSys 2020, section 4.2): each task k has
    ``num_specific`` experts of its own and shares ``num_shared`` experts with the others; task
    k's output mixes its own and the shared experts' outputs with a gate on its input; unless
    this is the last layer, a shared output mixes every expert with a gate on the shared input.

    forward(task_inputs: K tensors (B, d), shared_input (B, d)) -> (K tensors (B, H), (B, H) or
    None).
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        num_specific: int,
        num_shared: int,
        hidden_units: Sequence[int],
        last: bool,
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        args = (hidden_units, dropout, batch_norm, activation)
        self.specific = nn.ModuleList(
            Experts(in_dim, num_specific, *args) for _ in range(num_tasks)
        )
        self.shared = Experts(in_dim, num_shared, *args)
        self.gates = nn.ModuleList(
            Gate(in_dim, num_specific + num_shared) for _ in range(num_tasks)
        )
        n_all = num_tasks * num_specific + num_shared
        self.shared_gate = None if last else Gate(in_dim, n_all)
        self.out_dim = self.shared.out_dim

    def forward(
        self, task_inputs: Sequence[Tensor], shared_input: Tensor
    ) -> tuple[list[Tensor], Tensor | None]:
        shared = self.shared(shared_input)  # (B, S, H)
        own = [experts(x) for experts, x in zip(self.specific, task_inputs)]  # K x (B, s, H)
        outs = [
            mix(torch.cat([o, shared], dim=1), gate(x))
            for o, gate, x in zip(own, self.gates, task_inputs)
        ]
        if self.shared_gate is None:
            return outs, None
        every = torch.cat([*own, shared], dim=1)  # (B, K*s + S, H)
        return outs, mix(every, self.shared_gate(shared_input))
