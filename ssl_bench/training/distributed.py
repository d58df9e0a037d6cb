"""Data-parallel training of one stage on Ray Train workers (``train.pretext_workers`` > 1).

The stage runs on ``N`` workers of :class:`ray.train.torch.TorchTrainer` (``ScalingConfig(
num_workers=N, use_gpu=...)``; Ray sets up the process group: gloo on the CPU, NCCL on GPUs);
:func:`ray.train.torch.prepare_model` wraps the model in DistributedDataParallel, which averages
the gradients of every step across the workers. So that ``N`` workers train like one process
with the same global batch:

- every worker starts from the driver's weights and torch random state and gets the whole global
  batch (``FitContext.batches``): all draw the same epoch order and augmentation, and the step
  draws the pretext task's random views of the whole batch, the same numbers in every worker,
  one process's. Each worker then keeps its contiguous share of the views and targets
  (``FitContext.share_of``) and trains on it (``tests/test_ray_pretext.py``). So every worker
  augments, draws views for and (streamed dataset) reads the whole global batch, ``N`` times its
  share's work: cheap next to the network;
- the shares are equal (``train.batch_size`` is a multiple of the workers; a last batch is cut
  to a multiple of them, or dropped when too small to give each worker 2 images, as one process
  drops a last batch of one image): a cut last batch is drawn for the images the workers keep,
  not as one process's longer last batch would be;
- randomness belongs in ``prepare``, with the views (MAE draws its patch mask there, for the whole
  batch): randomness drawn in the forward pass would be each worker's own, drawn for its share
  from the same state as the others (their i-th images would get the same draws);
- a loss that is a mean over images (BYOL, MAE, GSIM, context restoration; the supervised BCE)
  is averaged over the workers into the global batch's mean, and DDP's averaged gradients are its
  gradients. A loss that depends on the whole batch would not be (each worker's SimCLR negatives,
  Barlow Twins' cross-correlation or VICReg's variance and covariance would be its share's), so
  the zoo's losses gather across the workers: lightly's ``gather_distributed`` all-gathers
  SimCLR's, NNCLR's and VICReg's embeddings (with their gradients) and what enters SimCLR's bank,
  MoCo's queue, NNCLR's support set and SwAV's queues, Barlow Twins scores the gathered batch
  (:class:`~ssl_bench.pretext.barlowtwins.WholeBatchBarlowTwinsLoss`), lightly all-reduces DINO's
  centre and the sums of SwAV's Sinkhorn (each worker adding its slice of the queue). The workers' mean loss and averaged gradients are then one process's on the global
  batch (``tests/test_distributed_losses.py``). A task of one's own whose loss depends on the
  batch must gather likewise (``lightly.utils.dist.gather``);
- BatchNorm: on GPUs the model's BatchNorm layers become ``SyncBatchNorm``, which normalises
  over the global batch. Torch has no SyncBatchNorm on the CPU, so there each worker normalises
  over its own share (what plain DDP does), and results differ from one process by that.
- each epoch, the losses averaged over the workers are reported with a checkpoint of the
  weights (``ray.train.report(..., checkpoint=...)``, from rank 0), kept under
  ``<out>/.ray-train/``; the driver loads the last one, the history and rank 0's random state
  (so later stages draw what they would have), then deletes the folder.

Ray is imported only when a stage runs this way (``pip install "ssl-bench[ray]"``); without
``RAY_ADDRESS`` a private local Ray instance is started, with ``RAY_ADDRESS=auto`` the cluster of
``ray start``. Each worker reads the fold's images itself: the resident tensor is shipped to it,
a streamed dataset is read from the cache (which must then sit on storage every node mounts).
"""
from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import torch
from packaging.requirements import Requirement
from torch import nn

from ..config import config_from_dict
from ..errors import UserError
from .context import FitContext
from .images import StreamedImages
from .progress import TrainingProgress

#: what runs a stage: ``stage_fn(ctx, model, net, epochs, stage)`` (module-level, so Ray can ship it)
StageFn = Callable[..., None]
CHECKPOINT_FILE = "model.pt"


def missing_ray_train_requirements() -> list[str]:
    """The requirements of Ray's ``train`` extra (as Ray's own metadata lists them) that are not
    installed here, ``["ray"]`` without Ray; ``[]`` when all are. Ray Train refuses to import
    without them (pyarrow, fsspec, ...), and its message does not say which are missing."""
    try:
        requires = importlib.metadata.requires("ray") or []
    except importlib.metadata.PackageNotFoundError:
        return ["ray"]
    missing = []
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": "train"}):
            continue
        try:
            importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(requirement).split(";")[0].strip())
    return missing


def _import_ray_train():
    try:
        import ray
        import ray.train
        import ray.train.torch
    except ImportError as error:
        missing = missing_ray_train_requirements()
        what = f"missing {', '.join(missing)}" if missing else str(error)
        raise UserError(f'train.pretext_workers > 1 needs Ray Train ({what}): pip install "ssl-bench[ray]" '
                        f'installs it') from None
    return ray


def data_parallel_stage(ctx: FitContext, model: nn.Module, epochs: int, stage: str, stage_fn: StageFn, workers: int) -> None:
    """Run ``stage_fn`` on ``workers`` Ray Train workers; ``model`` ends with the trained weights
    and ``ctx.history`` with the stage's epochs (module docstring)."""
    ray = _import_ray_train()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    use_gpu = ctx.device.type == "cuda"
    unit = "GPU" if use_gpu else "CPU"
    have = ray.cluster_resources().get(unit, 0)
    if workers > have:  # Ray would wait for them forever
        raise UserError(f"train.pretext_workers={workers} needs {workers} {unit}s, one per worker; the Ray "
                        f"cluster has {have:g}")
    images = ctx.images if isinstance(ctx.images, StreamedImages) else ctx.images.detach().cpu()
    storage = Path(ctx.config.out).expanduser().resolve() / ".ray-train"
    name = f"{stage}-{uuid.uuid4().hex[:8]}"
    trainer = ray.train.torch.TorchTrainer(
        _worker,
        train_loop_config={
            "config": ctx.config.to_dict(), "pretext": ctx.pretext, "model": model.cpu(), "images": images,
            "labels": ctx.labels.detach().cpu(), "rng": torch.get_rng_state(), "epochs": epochs, "stage": stage,
            "stage_fn": stage_fn, "amp_dtype": ctx.amp_dtype,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage)),
    )
    try:
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        torch.set_rng_state(state["rng"])
        ctx.loop.history.extend(state["history"])
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)
        if storage.is_dir() and not any(storage.iterdir()):
            storage.rmdir()
    model.to(ctx.device)


class _RayReport(TrainingProgress):
    """The worker's progress: each epoch, the losses averaged over the workers and (rank 0) a
    checkpoint of the weights, the history so far and the random state, to ``ray.train.report``."""

    def __init__(self, model: nn.Module, history: list[dict]):
        super().__init__(enabled=False)
        self.model, self.history = model, history

    def epoch_done(self, losses: dict[str, float]) -> None:
        ray = _import_ray_train()
        names = sorted(losses)
        if names and torch.distributed.is_initialized():
            mean = torch.tensor([losses[k] for k in names], dtype=torch.float64)
            torch.distributed.all_reduce(mean)
            losses = dict(zip(names, (mean / torch.distributed.get_world_size()).tolist()))
        if self.history:  # the loop appended this epoch's row before calling: make it the global mean
            self.history[-1].update(losses)
        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report(losses)
            return
        with tempfile.TemporaryDirectory() as folder:
            state = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                     "rng": torch.get_rng_state(), "history": list(self.history)}
            torch.save(state, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(losses, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _worker(spec: dict) -> None:
    """One Ray Train worker: rebuild the fold's training context, train this worker's shares."""
    ray = _import_ray_train()
    cfg = config_from_dict(spec["config"])
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = ray.train.torch.get_device()
    context = ray.train.get_context()
    images = spec["images"]
    if isinstance(images, StreamedImages):
        images = StreamedImages(images.source, device, images.workers, images.rows)
    else:
        images = images.to(device)
    model = spec["model"]
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    history: list[dict] = []
    ctx = FitContext(config=cfg, pretext=spec["pretext"], images=images, labels=spec["labels"].to(device),
                     device=device, amp_dtype=spec["amp_dtype"], progress=_RayReport(model, history))
    ctx.loop.history = history
    ctx.data.share = (context.get_world_rank(), context.get_world_size())
    torch.set_rng_state(spec["rng"])
    # the backbone's classifier gets no gradient in a pretext stage: DDP must be told
    net = ray.train.torch.prepare_model(ctx.prepare(model, compile=False),
                                        parallel_strategy_kwargs={"find_unused_parameters": True})
    spec["stage_fn"](ctx, model, net, spec["epochs"], spec["stage"])
