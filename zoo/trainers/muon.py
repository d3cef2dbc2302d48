"""Muon (Jordan et al., 2024) for the hidden weight matrices, AdamW for the rest: zoo's own
`MuonAdamW`, and `TorchMuonAdamW`, the same groups with ``torch.optim.Muon`` doing the Muon part."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from zoo.errors import PluginError


def muon_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The hidden weight matrices Muon orthogonalises: every ``nn.Linear`` weight except the last
    Linear (the output layer) and any weight shared with an embedding (tied heads)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [m.weight for m in linears[:-1] if m.weight.requires_grad and id(m.weight) not in embedded]


def fused_row_blocks(model: nn.Module) -> dict[int, tuple[int, ...]]:
    """``id(weight) -> block sizes`` of every Linear that declares ``zoo_fused_outputs``
    (`zoo.FusedProjections`): the output rows of several projections computed at once."""
    blocks = {}
    for name, module in model.named_modules():
        sizes = getattr(module, "zoo_fused_outputs", None)
        if isinstance(module, nn.Linear) and sizes is not None:
            ok = isinstance(sizes, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in sizes)
            if not ok or sum(sizes) != module.weight.shape[0]:
                raise PluginError(
                    f"{type(model).__name__}.{name}: zoo_fused_outputs {sizes!r} must be positive integers "
                    f"adding up to its {module.weight.shape[0]} output rows"
                )
            blocks[id(module.weight)] = tuple(sizes)
    return blocks


NS_COEFFS = (3.4445, -4.7750, 2.0315)  # the quintic Newton-Schulz iteration of Muon (Jordan et al., 2024)


def orthogonalize(grads: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximately U V^T of each matrix in a batch (N, m, n), by Newton-Schulz on the short side,
    in bf16 as Muon's authors run it (the iteration tolerates it; on this CPU too it is 2x faster)."""
    a, b, c = NS_COEFFS
    x = grads.to(torch.bfloat16)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    if x.shape[-1] >= 3 * x.shape[-2] and steps >= 2:  # much wider than high: fewer FLOPs on the Gram
        half = steps // 2
        x = _gram_newton_schulz(_gram_newton_schulz(x, half), steps - half)
    else:
        for _ in range(steps):
            gram = x @ x.mT  # (N, m, m), m the short side
            # a x + (b gram + c gram^2) x as two fused multiply-adds: on a CPU, bf16 element-wise ops
            # cost more than the matmuls, so this is ~3x faster than the plain expression
            poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, poly, x, beta=a, alpha=1.0)
    return (x.mT if tall else x).to(grads.dtype)


def _gram_newton_schulz(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` Newton-Schulz iterations of a wide x (m x n, n >= 3m) run on its Gram matrix
    G = x x^T: each iteration's polynomial Q = a + b G + c G^2 would map x to Q x, so G becomes
    Q G Q and the product of the Qs multiplies x once at the end: m x m matmuls instead of m x n
    ones (~30% fewer FLOPs at n = 4m). In bf16 G loses its small eigenvalues over many
    iterations, so `orthogonalize` runs this twice, G recomputed from x halfway (Gram
    Newton-Schulz with a restart, after Dao AI Lab)."""
    a, b, c = NS_COEFFS
    gram = x @ x.mT
    product = None
    for i in range(steps):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        poly.diagonal(dim1=-2, dim2=-1).add_(a)
        product = poly if product is None else poly @ product
        if i < steps - 1:
            gram = poly @ gram @ poly
    return x if product is None else product @ x


Block = tuple[int, int, int, bool]  # (param index, first row, rows, tall)


def _block(t: torch.Tensor, start: int, rows: int, tall: bool) -> torch.Tensor:
    """Rows ``start:start + rows`` of a matrix, short side first."""
    block = t[start : start + rows]
    return block.mT if tall else block


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the groups with ``algo = "muon"`` (2-D weights), AdamW for the others.

    Muon: Nesterov momentum, then the update orthogonalised by Newton-Schulz, batched over
    matrices of the same shape (one batched matmul chain instead of one per matrix), scaled by
    sqrt(max(1, rows / cols)); weight decay is decoupled in both algorithms. ``row_blocks`` maps
    ``id(weight)`` to the row blocks of a fused projection (`fused_row_blocks`): each block is a
    matrix of its own.
    """

    def __init__(
        self,
        groups: list[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        momentum: float,
        ns_steps: int,
        row_blocks: dict[int, tuple[int, ...]] | None = None,
    ) -> None:
        self.row_blocks = row_blocks or {}
        # per batch of same-shape matrices: Muon's momentum stacked (N, short, long), and each
        # matrix's update scale (None when all are 1)
        self._stacks: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        defaults = {"lr": lr, "betas": betas, "eps": eps, "momentum": momentum, "ns_steps": ns_steps}
        super().__init__(groups, {**defaults, "weight_decay": 0.0, "algo": "adamw"})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [g for p in params if (g := p.grad) is not None]
            if not params:
                continue
            if group["algo"] == "muon":
                self._muon(group, params, grads)
            else:
                self._adamw(group, params, grads)

    def _muon(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        beta, lr, decay = group["momentum"], group["lr"], group["weight_decay"]
        targets, updates = [], []
        batches = self._batches(params)
        if any(key not in self._stacks for key, *_ in batches):
            self._stack_momentum(params, batches)
        for key, _, batch in batches:
            # one op per stage on a stacked batch: each small op costs more than its arithmetic here
            g = torch.stack([_block(grads[i], start, rows, tall) for i, start, rows, tall in batch])
            momentum, scale = self._stacks[key]
            momentum.lerp_(g, 1 - beta)
            g.lerp_(momentum, beta)  # Nesterov
            ortho = orthogonalize(g, group["ns_steps"])
            if scale is not None:
                ortho.mul_(scale)
            for (i, start, rows, tall), update in zip(batch, ortho, strict=True):
                targets.append(params[i][start : start + rows])
                updates.append(update.mT if tall else update)
        torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_add_(targets, updates, alpha=-lr)

    def _batches(self, params: list[torch.Tensor]) -> list[tuple[tuple, tuple[int, int], list[Block]]]:
        """Every matrix (a weight, or a block of a fused projection's rows) as (param index, first
        row, rows, tall), batched by shape with the short side first: (512, 128) joins (128, 512)."""
        by_shape: dict[tuple[int, int], list[Block]] = {}
        for i, p in enumerate(params):
            starts = [0, *itertools.accumulate(self.row_blocks.get(id(p), (p.shape[0],)))]
            for start, end in itertools.pairwise(starts):
                rows, cols = end - start, p.shape[1]
                by_shape.setdefault((min(rows, cols), max(rows, cols)), []).append((i, start, rows, rows > cols))
        return [
            (tuple((id(params[i]), tuple(b)) for i, *b in batch), shape, batch) for shape, batch in by_shape.items()
        ]

    def _stack_momentum(self, params: list[torch.Tensor], batches: list[tuple[tuple, Any, list[Block]]]) -> None:
        """Each batch's momentum as one (N, short, long) tensor, from the per-parameter buffers (the
        first step, after a resume, or when the parameters with gradients change)."""
        ids = {id(params[i]) for _, _, batch in batches for i, *_ in batch}
        stale = [key for key in self._stacks if any(pid in ids for pid, _ in key)]  # this group's
        self._unstack_momentum(stale)
        for key in stale:
            del self._stacks[key]
        for key, (short, long), batch in batches:
            bufs = [self.state[params[i]].get("momentum_buffer", torch.zeros_like(params[i])) for i, *_ in batch]
            blocks = zip(bufs, batch, strict=True)
            momentum = torch.stack([_block(b, start, rows, tall) for b, (_, start, rows, tall) in blocks])
            # sqrt(max(1, rows / cols)): tall matrices get larger steps (made once: no copy to a device per step)
            scale = [(long / short) ** 0.5 if tall else 1.0 for *_, tall in batch]
            tall_scale = torch.tensor(scale, device=momentum.device)[:, None, None] if max(scale) > 1 else None
            self._stacks[key] = (momentum, tall_scale)

    def _unstack_momentum(self, keys: list[tuple] | None = None) -> None:
        """The stacked momentum (of ``keys``, or all) written back to each parameter's
        ``momentum_buffer``: what a checkpoint holds."""
        params = {id(p): p for group in self.param_groups for p in group["params"]}
        for key in self._stacks if keys is None else keys:
            stacked, _ = self._stacks[key]
            for (pid, (start, rows, tall)), value in zip(key, stacked, strict=True):
                p = params[pid]
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf[start : start + rows] = value.mT if tall else value

    def state_dict(self) -> dict[str, Any]:
        self._unstack_momentum()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._stacks.clear()  # rebuilt from the loaded per-parameter buffers

    def _adamw(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        (beta1, beta2), lr, eps, decay = group["betas"], group["lr"], group["eps"], group["weight_decay"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
        step = float(self.state[params[0]]["step"])  # a CPU counter: no device sync
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-lr / (1 - beta1**step))


class TorchMuonAdamW(MuonAdamW):
    """`MuonAdamW`'s groups with ``torch.optim.Muon`` stepping the Muon groups (one matrix at a
    time: no batching of same-shape matrices, no row blocks of fused projections, which it
    orthogonalises whole) and zoo's AdamW the others. Its momentum lives in this optimizer's
    ``state`` as ``momentum_buffer``, so checkpoints hold it like any other state."""

    def __init__(self, groups: list[dict[str, Any]], **settings: Any) -> None:
        super().__init__(groups, **settings)
        muon = [g for g in self.param_groups if g["algo"] == "muon"]
        for g in muon:
            g["eps"] = 1e-7  # torch's Newton-Schulz norm floor (the group's Adam eps is unused by Muon)
        # the Muon groups are these very dicts, so the lr the engine sets each step is the one it reads
        self._torch_muon = torch.optim.Muon(muon, lr=settings["lr"]) if muon else None

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params and group["algo"] == "adamw":
                self._adamw(group, params, [g for p in params if (g := p.grad) is not None])
        if self._torch_muon is not None:
            # after a load_state_dict the groups and state are new objects: point torch's Muon at them
            self._torch_muon.param_groups = [g for g in self.param_groups if g["algo"] == "muon"]
            self._torch_muon.state = self.state
            self._torch_muon.step()
