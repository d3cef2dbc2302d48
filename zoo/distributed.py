"""torch.distributed for the runtime: join the process group torchrun set up, wrap the model.

``torchrun --nproc_per_node=N -m zoo train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR;
`setup` then initialises gloo (CPU) or nccl (CUDA). Outside torchrun everything is one process.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from zoo.errors import RuntimeConfigError
from zoo.launch import launched_by_torchrun
from zoo.protocols import ShardUnit
from zoo.tags import attach, spec_of, tokenizer_of


@dataclass(frozen=True)
class DistInfo:
    mode: str  # "none" | "ddp" | "fsdp"
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"  # where collectives' tensors live (nccl needs them on the GPU)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for module in model.modules():
                if isinstance(module, ShardUnit) and module.zoo_shard_unit:
                    fully_shard(module)
            fully_shard(model)
            return model
        return model

    def sharded_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """FSDP: this rank's shards of the model and optimizer state dicts (DTensors, nothing
        gathered; an optimizer that has not stepped yet gets its state initialised). A collective."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        return get_model_state_dict(model), get_optimizer_state_dict(model, optimizer)

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        model_state: dict[str, Any],
        optim_state: dict[str, Any],
        *,
        frozen: Collection[str] = (),
    ) -> None:
        """Load state dicts: whole ones (one process or DDP; ``frozen`` names may be missing, they
        keep the values the model was built with), or under FSDP this rank's shards as
        `sharded_state` gives them (filled from a checkpoint)."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

            set_model_state_dict(model, model_state)
            set_optimizer_state_dict(model, optimizer, optim_state)
            return
        missing, unexpected = model.load_state_dict(model_state, strict=False)
        lost = set(missing) - set(frozen)
        if lost or unexpected:
            raise KeyError(f"missing {sorted(lost)[:5]}, unexpected {sorted(unexpected)[:5]}")
        optimizer.load_state_dict(optim_state)

    def gathered(self, model: nn.Module) -> nn.Module | None:
        """The trained model as one plain module on rank 0 (a collective under FSDP); ``model``
        itself without sharding, None on the other ranks under FSDP."""
        if self.mode != "fsdp":
            return model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank != 0:
            return None

        spec = spec_of(model)  # FSDP's model is rebuilt from its spec to save
        plain: nn.Module = spec.build()
        plain.load_state_dict(state, strict=True)
        return attach(plain, spec, tokenizer=tokenizer_of(model))

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any_failed(self, failed: bool) -> bool:
        """True on every rank when any rank failed (a collective): no rank waits for one that gave up."""
        if not self.active:
            return failed
        flag = torch.tensor([1.0 if failed else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def max_over_ranks(self, values: list[float]) -> list[float]:
        """Each of ``values``, the largest any rank has, on every rank (a collective)."""
        if not self.active:
            return [float(v) for v in values]
        flags = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return [float(v) for v in flags.tolist()]

    def all_gather_floats(self, values: list[float]) -> list[list[float]]:
        """Every rank's ``values``, in rank order, on every rank (a collective)."""
        table = torch.zeros((self.world_size, len(values)), dtype=torch.float64, device=self.device)
        table[self.rank] = torch.tensor(values, dtype=torch.float64)
        if self.active:
            dist.all_reduce(table)
        return [[float(v) for v in row] for row in table.tolist()]

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            value = value.to(self.device, copy=True)
            dist.all_reduce(value)
            value /= self.world_size
        return value


def setup(mode: str, device: torch.device) -> DistInfo:
    """Join (or reuse) the process group when launched with several processes."""
    if mode == "none" or (mode == "auto" and not launched_by_torchrun()):
        return DistInfo("none")
    if not launched_by_torchrun():
        raise RuntimeConfigError(
            f"runtime.distributed = {mode!r} needs several processes: launch with "
            "`torchrun --nproc_per_node=N -m zoo train ...` or `zoo train --nproc N`"
        )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    resolved = "ddp" if mode == "auto" else mode
    return DistInfo(resolved, dist.get_rank(), dist.get_world_size(), str(device))


def rank() -> int:
    """This process's rank (0 outside torchrun), valid before and after the process group."""
    return int(os.environ.get("RANK", "0"))


def shutdown(*, together: bool = False) -> None:
    """Leave the process group. ``together`` (every rank got here, as after a finished or stopped
    run): first a barrier, so no rank tears down its gloo connections and worker threads while a
    peer still has its last collective in flight on them (a rank that left early then aborted at
    exit, SIGABRT, "terminate called without an active exception"). After a failure no barrier:
    a rank that failed alone must not wait for the others forever."""
    if dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()
