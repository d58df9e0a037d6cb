"""Data-parallel pretext losses: 2 gloo workers under DistributedDataParallel, each scoring its
contiguous half of a global batch (as ``FitContext.share_of`` cuts it), get the averaged gradients,
the mean loss and the loss state (memory bank, queue, centre, support set) of one process scoring the whole
batch, for every zoo task whose loss depends on the batch (:mod:`ssl_bench.training.distributed`).

Reference: the task's own loss in this process, on the whole batch (torch.distributed not
initialised, so lightly gathers nothing). The network is one linear embedding of fixed random
features per view (no BatchNorm: torch has no SyncBatchNorm on the CPU), plus a fixed linear
teacher for the tasks with one; three steps, so that later steps score against the state (bank,
queue, centre) the earlier ones left, and SimCLR's bank (12), MoCo's queue (22) and NNCLR's support
set (12) wrap around, dropping the keys that do not fit; SwAV's Sinkhorn spreads the global batch,
and from the second step its queues, over the prototypes. BYOL and SimSiam (per-sample losses) are
the controls that need nothing.
"""
from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssl_bench.registry import PRETEXTS

pytestmark = pytest.mark.skipif(not dist.is_available() or "fork" not in mp.get_all_start_methods(),
                                reason="needs torch.distributed (gloo) and forked processes")

WORKERS, BATCH, FEATURES, DIM, STEPS = 2, 8, 6, 8, 3

#: case -> (pretext name, options): small embeddings, a bank/queue shorter than two global batches
CASES = {
    "simclr": ("simclr", {"out_dim": DIM}),
    "simclr-bank": ("simclr", {"out_dim": DIM, "memory_bank_size": 12}),
    "moco": ("moco", {"out_dim": DIM, "queue_size": 22}),  # 2 keys per image: 16 a step
    "barlowtwins": ("barlowtwins", {"out_dim": DIM}),
    "vicreg": ("vicreg", {"out_dim": DIM}),
    "dino": ("dino", {"out_dim": DIM, "local_crops": 1}),
    "byol": ("byol", {"out_dim": DIM}),
    # [z, p] and [z, scores] side by side in the DIM outputs; a support set and queues shorter than
    # two global batches; each worker's half of SwAV's queue joins its Sinkhorn from the second step
    "simsiam": ("simsiam", {"out_dim": DIM // 2}),
    "nnclr": ("nnclr", {"out_dim": DIM // 2, "memory_bank_size": 12}),
    "swav": ("swav", {"out_dim": DIM // 2, "n_prototypes": DIM // 2, "queue_size": 8, "local_crops": 1}),
}


class Embedder(nn.Module):
    """A linear embedding of every view, then a fixed linear teacher's of ``teacher_views``."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.student = nn.Linear(FEATURES, DIM)
        self.teacher = nn.Linear(FEATURES, DIM).requires_grad_(False) if task.uses_teacher else None

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = [self.student(v) for v in views]
        if self.teacher is not None:
            with torch.no_grad():
                outputs += [self.teacher(v) for v in self.task.teacher_views(views)]
        return outputs


def run_case(case: str, rank: int = 0, workers: int = 1) -> dict:
    """``STEPS`` steps of the case's loss on global batches of ``BATCH``; with ``workers`` > 1
    this rank's half under DDP. Returns each step's loss (the workers' mean) and gradients, and
    the task's buffers that the steps changed (an unused bank's pointer is uninitialised memory)."""
    name, options = CASES[case]
    torch.manual_seed(0)
    task = PRETEXTS.create(name, **options)
    n_views = len(task.prepare(torch.rand(2, 1, 32, 16), torch.zeros(2)).inputs)
    model = Embedder(task)
    net = DistributedDataParallel(model) if workers > 1 else model
    gen = torch.Generator().manual_seed(1)
    start = buffers(task)
    steps = []
    for _ in range(STEPS):
        views = [torch.randn(BATCH, FEATURES, generator=gen) for _ in range(n_views)]
        if workers > 1:
            views = [v.tensor_split(workers)[rank] for v in views]
        model.zero_grad()
        loss = task.loss(net(views), None)
        loss.backward()
        mean = loss.detach().clone()
        if workers > 1:
            dist.all_reduce(mean)
            mean /= workers
        steps.append({"loss": mean, "grads": {k: p.grad.clone() for k, p in model.student.named_parameters()}})
    changed = {k: b for k, b in buffers(task).items() if not torch.equal(b, start[k])}
    return {"steps": steps, "buffers": changed}


def buffers(task) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": b.clone() for m, module in task.stateful_modules().items() for k, b in module.named_buffers()}


def _rank(rank: int, port: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORKERS,
                            timeout=timedelta(seconds=60))
    try:
        results = {case: run_case(case, rank, WORKERS) for case in CASES}
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> list[dict]:
    """Every case on 2 gloo workers: each rank's results. The workers are forked from this
    process, which has imported the pretext tasks already (a spawned worker takes ~7 s for that)."""
    path = str(tmp_path_factory.mktemp("ddp") / "results")
    PRETEXTS.names()  # the built-ins, imported before forking
    mp.start_processes(_rank, args=(free_port(), path), nprocs=WORKERS, start_method="fork")
    return [torch.load(f"{path}.{r}", weights_only=True) for r in range(WORKERS)]


@pytest.mark.parametrize("case", list(CASES))
def test_workers_train_like_one_process(distributed, case):
    one = run_case(case)
    for rank, results in enumerate(distributed):
        got = results[case]
        for step, (want, have) in enumerate(zip(one["steps"], got["steps"])):
            torch.testing.assert_close(have["loss"], want["loss"], rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"rank {rank} step {step} loss: {m}")
            for k in want["grads"]:
                torch.testing.assert_close(have["grads"][k], want["grads"][k], rtol=1e-5, atol=1e-6,
                                           msg=lambda m: f"rank {rank} step {step} grad {k}: {m}")
        assert got["buffers"].keys() == one["buffers"].keys()
        for k in one["buffers"]:
            torch.testing.assert_close(got["buffers"][k], one["buffers"][k], rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"rank {rank} buffer {k}: {m}")
