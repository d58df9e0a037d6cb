"""Grad-CAM saliency of a finished run's classifiers (Selvaraju et al. 2017), through captum.

Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017. An image's map is
``ReLU(sum_c alpha_c A^c)``: ``A^c`` the c-th channel of the last convolutional feature map of the
classifier's timm backbone, ``alpha_c`` the spatial mean of the gradient of the malignancy logit
with respect to it; upsampled bilinearly to the image and scaled to [0, 1] per image (an all-zero
map stays zero: nothing in the image raised the logit). captum computes it (``LayerGradCam`` with
``relu_attributions=True``, ``LayerAttribution.interpolate``). The layer is the backbone's last
feature stage as timm names it (``feature_info``), so any timm CNN works, also the one a frozen
linear probe wraps. Refused in one line: a ViT (its last stage gives tokens, not a map), a
classifier without a timm backbone (the non-spatial control's trees), one whose probability has
no gradient (the k-NN probe: a vote among neighbours) and one that scores a breast's two views
together (``multiview``: a map of one image would not be the map of its fused score).

Two uses: ``ssl-bench predict --explain DIR`` (an overlay per scored file, the mean of the fold
models' maps) and :func:`explain_run` (``ssl-bench explain``, and ``bench`` at its end): the run's
most confident true positives, false positives and false negatives among its held-out images, at
each fold's operating point, each with the map of the fold model that held it out, in
``saliency/`` (:class:`~ssl_bench.experiment.rundir.RunDir`), which the HTML report shows.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ..config import config_from_dict
from ..data.loading import load_evaluation_data
from ..errors import UserError
from ..fileio import atomic_write_bytes, cannot_write
from ..training.view_pairs import takes_view_pairs
from .inference import fold_operating_thresholds, fold_records, load_files, load_fold_models, run_image_size
from .rundir import RunDir

#: what explain_run shows, in order: (kind, title), the kind's rows chosen by :func:`top_cases`
KINDS = (("tp", "true positives"), ("fp", "false positives"), ("fn", "false negatives"))
OVERLAY_ALPHA, OVERLAY_FLOOR = 0.45, 0.2  # the map's opacity, and the share of its peak below which it is not drawn
CAPTION_HEIGHT = 14  # pixels of the caption strip above an overlay
OVERLAY_HEIGHT = 320  # pixels of the overlays explain_run keeps, whatever the run's size (the report embeds them)


class NoSaliency(UserError):
    """A classifier that Grad-CAM cannot explain (no convolutional timm backbone, or no gradient)."""


def saliency_layer(classifier: nn.Module) -> nn.Module:
    """The layer whose feature map Grad-CAM weighs: the last feature stage of the timm backbone in
    ``classifier`` (the classifier itself, or the backbone a frozen probe wraps).

    Args:
        classifier: a trained classifier, as ``model.pt`` rebuilds it.

    Returns:
        The module named by the backbone's last ``feature_info`` entry.

    Raises:
        NoSaliency: no module of the classifier is a timm model with ``feature_info``.
    """
    for module in classifier.modules():
        info = getattr(module, "feature_info", None)
        if isinstance(info, list) and info and isinstance(info[-1], dict) and info[-1].get("module"):
            return module.get_submodule(str(info[-1]["module"]))
    raise NoSaliency(f"Grad-CAM needs a classifier with a timm backbone; {type(classifier).__name__} has none "
                     f"(the non-spatial control's trees cannot be explained this way)")


def refuse_view_pairs(classifier: nn.Module) -> None:
    """Raise :class:`NoSaliency` for a classifier that scores a breast's two views together."""
    if takes_view_pairs(classifier):
        raise NoSaliency(f"Grad-CAM explains a classifier of one image; {type(classifier).__name__} scores a breast's "
                         f"CC and MLO views together (transfer multiview), so it has no map of one image")


def scaled_to_peak(maps: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` maps each divided by its own maximum (an all-zero map stays zero)."""
    peak = maps.reshape(maps.shape[0], -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None]


def grad_cam(classifier: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 8) -> np.ndarray:
    """Grad-CAM maps of ``images`` for the malignancy logit.

    Args:
        classifier: a trained classifier (one logit per image).
        images: ``(N, 1, H, W)`` in [0, 1], as the classifier was trained on.
        device: where to compute.
        batch_size: images per pass.

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1], each scaled by its own maximum.

    Raises:
        NoSaliency: as :func:`saliency_layer`; a layer that gives no spatial map (a ViT's tokens);
            a probability without a gradient (the k-NN probe).
    """
    refuse_view_pairs(classifier)
    layer = saliency_layer(classifier)
    model = classifier.to(device).eval()
    cam = LayerGradCam(lambda x: model(x).reshape(x.shape[0], -1)[:, :1], layer)
    maps = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float().requires_grad_(True)
        try:
            attribution = cam.attribute(x, target=0, relu_attributions=True)
        except RuntimeError as exc:  # nothing between the input and the logit has a gradient
            if "does not require grad" not in str(exc) and "grad_fn" not in str(exc):
                raise
            raise NoSaliency(f"Grad-CAM needs a gradient of the probability; {type(classifier).__name__}'s has "
                             f"none (a k-NN vote)") from None
        if attribution.dim() != 4:
            raise NoSaliency(f"Grad-CAM needs a convolutional feature map; the backbone's last stage gives "
                             f"{tuple(attribution.shape)[1:]} (a ViT's tokens)")
        up = LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), interpolate_mode="bilinear")
        maps.append(up[:, 0].detach().float().cpu())
    return scaled_to_peak(torch.cat(maps).clamp_min(0).numpy()).astype(np.float32)


def overlay_png(image: np.ndarray, cam: np.ndarray, title: str = "", height: int | None = None) -> bytes:
    """The image in gray with the map blended over it (``jet``, 45% where the map reaches 0.2 of
    its peak, none below), as PNG; a caption strip above it when ``title`` is given.

    Args:
        image: ``(H, W)`` in [0, 1].
        cam: ``(H, W)`` in [0, 1].
        title: the caption (none when empty).
        height: the picture's height in pixels (default the image's; bilinear).

    Returns:
        The PNG file's bytes.
    """
    gray = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    alpha = OVERLAY_ALPHA * (cam >= OVERLAY_FLOOR)[..., None]
    rgb = gray * (1 - alpha) + colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * alpha
    picture = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    h, w = image.shape
    pixels = height or h
    picture = picture.resize((max(1, round(pixels * w / h)), pixels), Image.Resampling.BILINEAR)
    if title:
        font = ImageFont.load_default()
        strip = Image.new("RGB", (picture.width, CAPTION_HEIGHT), "white")
        ImageDraw.Draw(strip).text((2, 2), title, fill="black", font=font)
        framed = Image.new("RGB", (picture.width, picture.height + CAPTION_HEIGHT), "white")
        framed.paste(strip, (0, 0))
        framed.paste(picture, (0, CAPTION_HEIGHT))
        picture = framed
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def fold_mean_maps(models: Sequence[tuple[int, nn.Module]], images: torch.Tensor, device: torch.device) -> np.ndarray:
    """The mean of the fold models' Grad-CAM maps of ``images`` (``(N, H, W)``, scaled to [0, 1]
    again), what ``predict --explain`` draws for the fold ensemble's probability."""
    return scaled_to_peak(np.mean([grad_cam(model, images, device) for _, model in models], axis=0))


def overlay_names(files: Sequence[str]) -> list[str]:
    """A distinct ``<stem>.gradcam.png`` per input file (a number in front where two share a stem)."""
    stems = [Path(f).name.split(".")[0] or "image" for f in files]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [f"{i}-{s}.gradcam.png" if s in repeated else f"{s}.gradcam.png" for i, s in enumerate(stems)]


def explain_files(run_dir: str | Path, files: Sequence[str], out_dir: str | Path, device: torch.device) -> list[Path]:
    """``predict --explain``: an overlay per file of the fold models' mean Grad-CAM map, at the
    run's image size, written to ``out_dir`` (made if missing) as ``<stem>.gradcam.png``.

    Args:
        run_dir: the run whose fold models scored the files.
        files: the image files, as ``predict`` got them.
        out_dir: where the overlays go.
        device: where to compute.

    Returns:
        The overlay of each file, in order.

    Raises:
        NoSaliency: the run's classifier cannot be explained (see the module docstring).
        UserError: ``out_dir`` cannot be made or written.
    """
    config, models = load_fold_models(run_dir)
    batch = load_files(list(files), run_image_size(config), lambda text: None)  # predict warned already
    maps = fold_mean_maps(models, batch, device)
    folder = Path(out_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, image, cam in zip(overlay_names(files), batch[:, 0].numpy(), maps):
            atomic_write_bytes(folder / name, overlay_png(image, cam))
            paths.append(folder / name)
    except OSError as exc:
        raise UserError(f"cannot write --explain {folder}: {cannot_write(folder, exc)}") from None
    return paths


def top_cases(predictions: pd.DataFrame, thresholds: dict[int, float], top: int) -> pd.DataFrame:
    """The run's most confident mistakes and hits among its held-out images: ``top`` each of true
    positives (malignant, called malignant; highest scores first), false positives (benign, called
    malignant; highest first) and false negatives (malignant, called benign; lowest first), each
    image called at its fold's operating threshold.

    Args:
        predictions: pooled held-out predictions (``image_id, patient_id, label, score, fold``).
        thresholds: each fold's operating threshold.
        top: images per kind.

    Returns:
        The chosen rows with ``kind``, ``rank`` (1 = most confident) and ``threshold``, in
        :data:`KINDS` order.
    """
    p = predictions.assign(threshold=predictions["fold"].map(thresholds).astype(float))
    called = p["score"] >= p["threshold"]
    malignant = p["label"] == 1
    chosen = []
    for kind, rows, ascending in (("tp", p[malignant & called], False), ("fp", p[~malignant & called], False),
                                  ("fn", p[malignant & ~called], True)):
        picked = rows.sort_values(["score", "image_id"], ascending=[ascending, True]).head(top)
        chosen.append(picked.assign(kind=kind, rank=np.arange(1, len(picked) + 1)))
    return pd.concat(chosen, ignore_index=True)


def explain_run(run_dir: str | Path, device: torch.device, top: int = 3) -> pd.DataFrame:
    """Write the Grad-CAM overlays of the run's ``top`` true positives, false positives and false
    negatives (:func:`top_cases`) to its ``saliency/`` folder, each image explained by the fold
    model that held it out, and return their table.

    Args:
        run_dir: a finished (or partial) run directory whose folds kept their ``model.pt``.
        device: where to compute.
        top: images per kind (>= 1).

    Returns:
        The table written to ``saliency/saliency.csv``.

    Raises:
        UserError: ``top`` < 1; no fold has both results and a model.
        NoSaliency: the run's classifier cannot be explained (see the module docstring).
        DataError: the run's dataset is no longer where its config says (it is read again).
    """
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    rundir = RunDir.open(run_dir)
    _, models = load_fold_models(rundir.path)
    by_fold = {k: m for k, m in models if rundir.fold_done(k)}
    for model in by_fold.values():  # before the run's data is loaded again
        refuse_view_pairs(model)
    if not by_fold:
        raise UserError(f"{rundir.path} has no fold with both its results and its model.pt")
    predictions = pd.concat([rundir.read_predictions(k).assign(fold=k) for k in by_fold], ignore_index=True)
    cases = top_cases(predictions, fold_operating_thresholds(fold_records(rundir, list(by_fold)), list(by_fold)), top)
    loaded = load_evaluation_data(config_from_dict(rundir.read_config()))
    index = pd.Series(np.arange(len(loaded.samples)), index=loaded.samples["image_id"].astype(str))
    missing = sorted(set(cases["image_id"]) - set(index.index))
    if missing:
        raise UserError(f"the run's dataset no longer holds its held-out image(s) {', '.join(missing[:3])}: "
                        f"explain needs the data the run was trained on")
    overlays, files = {}, []
    for k, rows in cases.groupby("fold", sort=True):
        pixels = np.stack([np.asarray(loaded.images[int(i)], dtype=np.float32) for i in index[rows["image_id"]]])
        maps = grad_cam(by_fold[int(k)], torch.from_numpy(pixels).unsqueeze(1), device)
        for row, image, cam in zip(rows.itertuples(index=False), pixels, maps):
            name = f"{row.kind}-{row.rank}.png"
            overlays[name] = overlay_png(image, cam, f"{row.image_id}  p={row.score:.2f}  (fold {k})",
                                         height=OVERLAY_HEIGHT)
            files.append((row.kind, row.rank, f"saliency/{name}"))
    named = pd.DataFrame(files, columns=["kind", "rank", "file"])
    table = cases.merge(named, on=["kind", "rank"])
    order = {kind: i for i, (kind, _) in enumerate(KINDS)}
    table = table.sort_values(["kind", "rank"], key=lambda c: c.map(order) if c.name == "kind" else c)
    rundir.write_saliency(overlays, table.reset_index(drop=True))
    return table.reset_index(drop=True)
