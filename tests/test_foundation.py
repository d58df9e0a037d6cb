"""Foundation-model baselines (issue 27, item 4): benchmarks/foundation.yaml plans without training,
every foundation row names timm weights of its own backbone, and a ViT whose patch does not divide
the run's image size (DINOv2's 14 px) is built padded so that it sees every pixel: its output is
the unpadded ViT's on the zero-padded image, its position embedding timm's resampling of the
weights', and an exported one loads back in timm with the arguments its provenance gives."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from ssl_bench.benchmark import plan_benchmark
from ssl_bench.errors import ConfigError
from ssl_bench.models.backbone_file import write_backbone_file
from ssl_bench.models.backbones import create_backbone, image_size_kwargs, pretrained_weights, timm_state_dict
from ssl_bench.pretext.mae import MAE

FOUNDATION = Path(__file__).resolve().parents[1] / "benchmarks" / "foundation.yaml"


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_the_bench_runner_plans_foundation_yaml(profile, tmp_path):
    plan, _ = plan_benchmark(FOUNDATION, profile=profile, flags={"out": str(tmp_path)})
    rows = {c.method: c for c in plan.configs}
    assert plan.baselines == ("ResNet50-IN1k-finetune",)
    for family, backbone, tag in (("ResNet50-IN1k", "resnet50", "resnet50.tv_in1k"),
                                  ("DINOv2-S", "vit_small_patch14_dinov2", "vit_small_patch14_dinov2.lvd142m")):
        for transfer in ("finetune", "linear", "knn"):
            c = rows[f"{family}-{transfer}"]
            assert (c.pretext, c.transfer, c.model.backbone, c.model.pretrained) == ("none", transfer, backbone, tag)
            assert pretrained_weights(backbone, tag).tagged == tag  # timm's weights of that very architecture
    ssl = [c for c in plan.configs if c.pretext != "none"]
    assert {c.transfer for c in ssl} >= {"finetune", "linear"} and all(c.pretext == "simclr" for c in ssl)
    assert len({(c.seed, c.data.folds, c.data.split, c.data.dataset, c.data.image_size) for c in plan.configs}) == 1
    size = plan.configs[0].data.image_size
    padded = image_size_kwargs("vit_small_patch14_dinov2", size)
    assert padded["img_size"] == tuple(-(-s // 14) * 14 for s in size) and padded["dynamic_img_pad"]


def test_a_vit_whose_patch_does_not_divide_the_image_sees_every_pixel(tmp_path):
    size = (40, 24)  # test_vit's 16-px patches: padded to 48x32, a 3x2 grid
    assert image_size_kwargs("test_vit", size) == {"img_size": (48, 32), "dynamic_img_size": True,
                                                   "dynamic_img_pad": True}
    assert image_size_kwargs("test_vit", (64, 32)) == {"img_size": (64, 32)}
    torch.manual_seed(0)
    vit = create_backbone("test_vit", image_size=size).eval()
    plain = timm.create_model("test_vit", in_chans=1, num_classes=1, img_size=(48, 32)).eval()
    plain.load_state_dict(vit.state_dict())
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), plain(torch.nn.functional.pad(x, (0, 8, 0, 8))))
    with pytest.raises(ConfigError, match="multiple of the backbone's patch size 16x16; .*built padded to 48x32"):
        MAE().build_masked_head(vit)

    # exported, it loads in timm with the arguments the provenance gives, and as --pretrained PATH
    state, norm = timm_state_dict(vit)
    assert norm is None
    path = tmp_path / "vit.safetensors"
    write_backbone_file(path, state, {"backbone": "test_vit", "input_norm": None})
    again = timm.create_model("test_vit", pretrained=True, in_chans=1, num_classes=1, **image_size_kwargs("test_vit", size),
                              pretrained_cfg_overlay=dict(file=str(path), input_size=(1, *size), num_classes=1)).eval()
    loaded = create_backbone("test_vit", pretrained=path, image_size=size).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), vit(x))
        torch.testing.assert_close(loaded.forward_features(x), vit.forward_features(x))


def test_vit_weights_by_tag_load_padded_at_a_mammogram_size(tmp_path, monkeypatch):
    """What the DINOv2 rows do (a ViT's weights by tag, its patch not dividing the image), on
    timm's tiny test ViT: test_vit.r160_in1k from a Hugging Face cache laid out here (160 px, a
    10x10 grid), built padded for 40x24, its position embedding resampled by timm to the 3x2 grid,
    the weights' mean and std in front of its RGB patch embedding. DINOv2-S itself (22M
    parameters, 518 px) goes the same way, only slower; its sizing is checked above."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    state = timm.create_model("test_vit", num_classes=1000).state_dict()
    commit = "0" * 40
    repo = cache / "models--timm--test_vit.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, repo / "snapshots" / commit / "model.safetensors")
    weights = pretrained_weights("test_vit", "test_vit.r160_in1k")
    assert weights.cached() is not None
    model = create_backbone("test_vit", pretrained="test_vit.r160_in1k", image_size=(40, 24)).eval()
    assert model.patch_embed.grid_size == (3, 2)
    expected = resample_abs_pos_embed(state["pos_embed"], (3, 2), num_prefix_tokens=model.num_prefix_tokens)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    assert model.patch_embed.proj.normalisation() == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert torch.equal(model.patch_embed.proj.conv.weight, state["patch_embed.proj.weight"])
    with torch.no_grad():
        assert model(torch.rand(2, 1, 40, 24)).shape == (2, 1)
