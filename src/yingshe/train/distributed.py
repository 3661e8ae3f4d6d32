"""Data-parallel training under `torchrun`: the process group, the DDP wrapper, and the few
collectives the loop needs.

torchrun starts one process per device and tells each who it is through the environment
(RANK, WORLD_SIZE, LOCAL_RANK, TORCHELASTIC_RESTART_COUNT). Without those variables (or with a
world of one) every function here is a no-op, so the single-process path is the same code.

The contract (docs/distributed.md): `train.batch_size` is the GLOBAL batch; each rank takes
batch_size / world of it, and gradients are averaged across ranks, so one optimiser step sees the
same number of images with the same learning rate on 1 or N processes. Only rank 0 writes to the
run folder; the others wait for it at a barrier.

A rank that dies or hangs must not leave the others waiting forever: the group is created with a
timeout (`train.dist_timeout` seconds) that every Gloo collective honours, NCCL gets
TORCH_NCCL_ASYNC_ERROR_HANDLING so a timed-out collective aborts the process, and torchrun itself
tears the group down when one worker exits.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from yingshe.errors import YingsheError
from yingshe.runtime import resolve_device

KILL_HOOK = "YINGSHE_DEBUG_KILL_AT"  # "RANK:STEP": that rank SIGKILLs itself before that step (tests)
STEP_LOG = "YINGSHE_DEBUG_STEP_LOG"  # a file: rank 0 appends "step loss" per step (the global mean)


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the group; rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """This process's place in the group, from the variables torchrun sets."""
    try:
        return DistContext(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as err:
        problem = f"RANK/WORLD_SIZE/LOCAL_RANK are not integers: {err}"
        raise YingsheError(problem, "launch with torchrun") from err


def context() -> DistContext:
    """The running group's context (rank 0 of 1 when no group is up)."""
    if not active():
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def restart_count() -> int:
    """How many times torchrun has restarted this group (--max-restarts); 0 on the first try."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def max_restarts() -> int:
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)


def setup(device_setting: str, timeout_s: float) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes and pick this rank's device: cuda:LOCAL_RANK with
    NCCL where the device is a GPU, the CPU with Gloo otherwise. Without torchrun, the device alone."""
    ctx = env_context()
    if not ctx.enabled:
        return ctx, resolve_device(device_setting)
    device = resolve_device(device_setting)
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise YingsheError(
                f"LOCAL_RANK {ctx.local_rank} has no GPU: {torch.cuda.device_count()} visible here",
                "start at most one process per GPU (torchrun --nproc-per-node <= the GPU count)",
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise YingsheError(
            f"distributed training runs on CUDA (NCCL) or the CPU (Gloo), not on {device.type}",
            "set train.device=cpu or run on CUDA GPUs",
        )
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        # a key prefix per torchrun attempt: a restarted group must not read the addresses the
        # dead attempt's ranks published (seen as "Gloo connectFullMesh failed ... refused")
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        store = dist.PrefixStore(f"yingshe/attempt-{restart_count()}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return ctx, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world: int) -> int:
    """Each rank's share of the global `train.batch_size`; it must divide evenly, or one step
    would mean a different batch on N processes than on one."""
    if global_batch % world:
        lower, upper = global_batch - global_batch % world, global_batch + world - global_batch % world
        raise YingsheError(
            f"train.batch_size={global_batch} (the global batch) does not divide among {world} processes",
            f"set train.batch_size to a multiple of {world}, e.g. {lower or upper} or {upper}",
        )
    return global_batch // world


def wrap(model: nn.Module, device: torch.device, sync_bn: bool, find_unused: bool = False) -> nn.Module:
    """The DDP training wrapper of `model` (which is returned as is outside a group). With
    `sync_bn`, batch norm layers share their batch statistics across ranks (CUDA only: PyTorch's
    SyncBatchNorm has no CPU kernel).

    DDP registers the parameters that require grad now and, by default, waits every step for a
    gradient of each. `find_unused` says some of them get none in some steps (a gradual
    fine-tune's stages before they unfreeze, `train.find_unused_parameters`): DDP then looks for
    unused parameters each step (a graph walk; their gradients stay None, so the optimiser leaves
    them alone).
    Parameters frozen for the whole run should be frozen before this call, which keeps them out
    of DDP altogether; one frozen now and unfrozen later would train on each rank's own share
    without its gradient ever being averaged."""
    if not active():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # a model that freezes parameters by epoch (`set_epoch`: airbench's whitening bias) leaves
    # DDP waiting for gradients that never come unless DDP looks for unused parameters each step
    find_unused = find_unused or callable(getattr(model, "set_epoch", None))
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    if sync_bn and device.type != "cuda":
        raise YingsheError(
            "train.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm has no CPU implementation",
            "drop train.sync_bn on CPU (each rank then normalises with its own batch's statistics)",
        )


def broadcast_state(model: nn.Module) -> None:
    """Every rank takes rank 0's weights and buffers (after a data-dependent initialisation, which
    saw a different shard on each rank)."""
    if not active():
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, 0)


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def min_int(value: int) -> int:
    """The smallest `value` over the ranks: steps per epoch, so no rank waits on a step the
    others never take."""
    if not active():
        return value
    return min(gather_objects(value))


def sum_tensors(*tensors: torch.Tensor) -> None:
    """Sum each tensor across ranks, in place."""
    if active():
        for tensor in tensors:
            dist.all_reduce(tensor)


def any_true(flag: bool) -> bool:
    """True on every rank when it is true on any (a stop decision must be unanimous)."""
    return any(gather_objects(bool(flag))) if active() else flag


def barrier() -> None:
    if active():
        dist.barrier()


def part(key: str = "trained") -> None:
    """The last synchronisation of a run: every rank arrives, and none leaves before rank 0 has
    left the barrier too. (A rank that exits right after a Gloo barrier can close its sockets
    while rank 0 still completes it, which rank 0 sees as a lost peer; so the others wait for
    rank 0's word in torchrun's key-value store, which outlives the workers.)"""
    if not active():
        return
    dist.barrier()
    store = dist.distributed_c10d._get_default_store()
    name = f"yingshe/{key}/{restart_count()}"
    if is_main():
        store.set(name, "1")
    else:
        store.wait([name])


def kill_hook(step: int) -> None:
    """Fault injection for the tests: the rank named in YINGSHE_DEBUG_KILL_AT dies by SIGKILL
    before that step, on torchrun's first attempt only (so an elastic restart can finish)."""
    spec = os.environ.get(KILL_HOOK)
    if not spec or restart_count() > 0:
        return
    rank, _, at = spec.partition(":")
    if int(rank) == context().rank and int(at) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def log_step_loss(step: int, loss: torch.Tensor) -> None:
    """With YINGSHE_DEBUG_STEP_LOG set, rank 0 appends the step's loss averaged over the ranks
    (the loss of the global batch when the shares are equal): how the DDP test compares runs."""
    path = os.environ.get(STEP_LOG)
    if not path:
        return
    value = loss.detach().float().clone()
    if active():
        dist.all_reduce(value)
        value /= dist.get_world_size()
    if is_main():
        with open(path, "a") as f:
            f.write(f"{step} {float(value):.9g}\n")


def collective_failure(err: BaseException) -> bool:
    """Whether `err` came from a collective (Gloo and NCCL raise plain RuntimeErrors too)."""
    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(w in text for w in ("gloo", "nccl", "timed out"))


def unused_parameters_error(err: BaseException, find_unused: bool) -> YingsheError | None:
    """DDP's "Expected to have finished reduction" as a clear error: a step gave some trainable
    parameters no gradient (a forward that skips a layer, an auxiliary head), so DDP, which waits
    for every registered parameter's gradient, could not finish the step. With `find_unused`
    already on, the cause is an output that never reaches the loss."""
    if "expected to have finished reduction" not in str(err).lower():
        return None
    if find_unused:
        return YingsheError(
            "under torchrun a training step left some parameters without a gradient although "
            "train.find_unused_parameters is on: some of the model's outputs never reach the loss",
            "make every output of the model's forward part of the loss, or train on one process",
        )
    return YingsheError(
        "under torchrun a training step gave some trainable parameters no gradient (the model's "
        "forward skips them), and DDP waits for a gradient of every one",
        "set train.find_unused_parameters=true (DDP then looks for them every step), freeze those "
        "parameters, or train on one process",
    )


def lost_peer_error(err: BaseException, timeout_s: float) -> YingsheError:
    """What a collective's failure means to the user: another rank died or hung."""
    ctx = context() if active() else env_context()
    return YingsheError(
        f"rank {ctx.rank} of {ctx.world} lost the process group ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else 'no message'}): another rank died or hung "
        f"(collectives time out after train.dist_timeout={timeout_s:g} s)",
        "read the failing rank's log above; torchrun --max-restarts K restarts the group, "
        "which resumes from the run's last.pt by itself (needs --out)",
    )
