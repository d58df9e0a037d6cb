"""Fast checks of ssl_bench.models: U-Net, RDN, heads and timm backbones (CPU, tiny sizes)."""
from __future__ import annotations

import pytest
import timm
import torch
from click.testing import CliRunner
from torch import nn

from ssl_bench import components
from ssl_bench.cli import main
from ssl_bench.config import PROFILES, build_config

from ssl_bench.errors import ConfigError
from ssl_bench.models.backbones import (
    classifier_logits,
    create_backbone,
    encode_multiscale,
    input_normalisation,
    num_pooled_features,
    pooled_features,
)
from ssl_bench.models.heads import ProjectionMLP, UNetDecoder, backbone_feature_info
from ssl_bench.models.rdn import PRESETS, RDN, rdn_num_params, rdn_receptive_field
from ssl_bench.models.unet import UNet
from ssl_bench.registry import NETWORKS

SIZES = [(64, 32), (70, 34)]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_networks_registered():
    assert NETWORKS.get("unet") is UNet
    assert NETWORKS.get("rdn") is RDN


# ---------------------------------------------------------------- U-Net
@pytest.mark.parametrize("size", SIZES + [(17, 5)])
def test_unet_shapes(size):
    torch.manual_seed(0)
    net = UNet(in_chans=1, out_chans=2, width=4).eval()
    x = torch.randn(2, 1, *size)
    assert net(x).shape == (2, 2, *size)
    assert net.encoder_channels == 4 * 16
    h, w = (-(-s // 16) for s in size)
    assert net.encode(x).shape == (2, 64, h, w)


def test_unet_depth_and_width():
    net = UNet(width=2, depth=3)
    assert net.encoder_channels == 16
    assert net(torch.randn(1, 1, 12, 20)).shape == (1, 1, 12, 20)


def test_unet_standard_parameter_count():
    # Ronneberger et al.'s U-Net (64..1024) is commonly quoted at ~31.0 M parameters.
    count = n_params(UNet(1, 1, 64))
    assert abs(count - 31.0e6) / 31.0e6 < 0.01, count


def test_unet_checkpoint_identical():
    torch.manual_seed(0)
    plain = UNet(width=4)
    ckpt = UNet(width=4, checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 40, 24)
    for net in (plain, ckpt):
        net.train()
        net(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    # BatchNorm statistics updated exactly once per forward, as without checkpointing
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    plain.eval(), ckpt.eval()
    torch.testing.assert_close(plain(x), ckpt(x))


# ---------------------------------------------------------------- RDN
TINY = dict(num_blocks=2, num_layers=2, growth=3, features=4)


@pytest.mark.parametrize("size", SIZES)
def test_rdn_shapes(size):
    net = RDN(out_chans=2, **TINY)
    x = torch.randn(2, 1, *size)
    assert net(x).shape == (2, 2, *size)
    assert net.encoder_channels == 4
    assert net.encode(x).shape == (2, 4, *size)


def test_rdn_parameter_formula():
    # by hand, k=o=1, D=2, C=2, G=3, G0=4 (every conv has a bias):
    #   shallow: (9*1*4 + 4) + (9*4*4 + 4)                      = 40 + 148      = 188
    #   one RDB: (9*4*3 + 3) + (9*7*3 + 3) + ((4 + 2*3)*4 + 4)   = 111 + 192 + 44 = 347
    #   GFF:     (2*4*4 + 4) + (9*4*4 + 4)                       = 36 + 148      = 184
    #   recon:   9*4*1 + 1                                                        = 37
    expected = 188 + 2 * 347 + 184 + 37
    assert expected == 1103
    assert n_params(RDN(**TINY)) == expected == rdn_num_params(**TINY)
    # one more block: one more RDB (347) and G0*G0 more weights in the 1x1 GFF
    assert n_params(RDN(**{**TINY, "num_blocks": 3})) == expected + 347 + 4 * 4
    # one more layer per block: layer c=2 (9*(4+2*3)*3 + 3 = 273) and G*G0 more in the LFF
    assert n_params(RDN(**{**TINY, "num_layers": 3})) == expected + 2 * (273 + 3 * 4)
    # growth 3 -> 5: layers 9*4*5+5 and 9*9*5+5, LFF (4+10)*4+4 -> RDB = 185 + 410 + 60
    assert n_params(RDN(**{**TINY, "growth": 5})) == expected + 2 * (655 - 347)
    for cfg in (dict(), dict(num_blocks=8, num_layers=6, growth=32, features=64)):
        assert n_params(RDN(**cfg)) == rdn_num_params(**cfg)


def test_rdn_checkpoint_identical():
    torch.manual_seed(0)
    plain = RDN(**TINY, checkpoint=False)
    ckpt = RDN(**TINY, checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 20, 12)
    out_plain, out_ckpt = plain(x), ckpt(x)
    torch.testing.assert_close(out_plain, out_ckpt)
    out_plain.square().mean().backward()
    out_ckpt.square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_rdn_presets_give_the_standard_and_the_compact_rdn():
    std = RDN(preset="standard", growth=2, features=3)  # the standard depth at a tiny width
    assert (len(std.blocks), len(std.blocks[0].layers), std.checkpoint) == (16, 8, True)
    assert (std.growth, std.features, std.encoder_channels) == (2, 3, 3)
    compact = RDN(preset="compact")
    assert (len(compact.blocks), len(compact.blocks[0].layers), compact.growth, compact.features) == (4, 4, 16, 32)
    assert compact.checkpoint is False
    assert n_params(compact) == rdn_num_params(num_blocks=4, num_layers=4, growth=16, features=32)
    # the default is the standard preset: Zhang et al.'s D=16, C=8, G=64, G0=64, checkpointed
    assert RDN.__init__.__defaults__[2] == "standard"
    assert PRESETS["standard"] == dict(num_blocks=16, num_layers=8, growth=64, features=64, checkpoint=True)
    # an option given explicitly overrides its preset's value
    mixed = RDN(preset="standard", num_blocks=2, growth=2, features=3, checkpoint=False)
    assert (len(mixed.blocks), len(mixed.blocks[0].layers), mixed.checkpoint) == (2, 8, False)
    for bad in (dict(preset="huge"), dict(num_blocks=0), dict(growth=2.5), dict(checkpoint="yes")):
        with pytest.raises(ValueError):
            RDN(**bad)


def test_rdn_standard_depth_trains_at_smoke_size_checkpointed():
    torch.manual_seed(0)
    net = RDN(preset="standard", growth=2, features=3)
    x = torch.randn(2, 1, *PROFILES["smoke"]["data.image_size"])
    y = net(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.blocks[-1].layers[-1][0].weight.grad.abs().sum() > 0


def test_rdn_preset_is_an_ordinary_option():
    assert components.user_options("networks", RDN)["preset"] == "standard"
    paper = build_config("paper")
    net = components.create(NETWORKS, "rdn", paper, in_chans=1, out_chans=1)
    assert (len(net.blocks), len(net.blocks[0].layers), net.growth, net.features, net.checkpoint) == (
        4, 4, 16, 32, False)
    standard = build_config("paper", sets=["params.rdn.preset=standard", "params.rdn.features=8",
                                           "params.rdn.growth=4"])
    net = components.create(NETWORKS, "rdn", standard, in_chans=1, out_chans=1)
    assert (len(net.blocks), len(net.blocks[0].layers), net.growth, net.features, net.checkpoint) == (
        16, 8, 4, 8, True)
    for profile in ("smoke", "quick"):  # their own small sizes, not checkpointed
        net = components.create(NETWORKS, "rdn", build_config(profile), in_chans=1, out_chans=1)
        assert net.checkpoint is False
        assert len(net.blocks) == PROFILES[profile]["params.rdn"]["num_blocks"]


# ---------------------------------------------------------------- receptive fields
def positive_constant(net: nn.Module) -> nn.Module:
    """Every convolution weight ``1/fan_in``, every bias 0, in float64: with a positive input every
    activation is positive, so no ReLU cuts a path and no sum cancels, and the gradient of one
    output pixel is nonzero exactly on the input pixels it depends on (float64: the paths to the
    edge of a 265-px field carry products down to about 1e-166)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net.double()


def gradient_support(fn, size: tuple[int, int], row: int, col: int) -> tuple[int, int]:
    """(rows, columns) of the input on which ``d fn(x)[0, :, row, col].sum() / dx`` is nonzero,
    each as the side of their bounding range; checks that the rows and columns are contiguous."""
    x = torch.ones(1, 1, *size, dtype=torch.float64, requires_grad=True)
    fn(x)[0, :, row, col].sum().backward()
    nonzero = x.grad[0, 0] != 0
    sides = []
    for dim in (1, 0):
        idx = nonzero.any(dim=dim).nonzero().flatten().tolist()
        assert idx == list(range(idx[0], idx[-1] + 1))
        sides.append(len(idx))
    return sides[0], sides[1]


def test_rdn_receptive_field_formula():
    # 2 shallow convs + C per block + the GFF's 3x3 + reconstruction, 3x3 each; 1x1s add nothing
    assert rdn_receptive_field(16, 8) == 1 + 2 * (16 * 8 + 4) == 265
    assert rdn_receptive_field(4, 4) == 41 and rdn_receptive_field(4, 4, encode=True) == 39
    assert rdn_receptive_field(16, 8, encode=True) == 263
    assert (rdn_receptive_field(3, 3), rdn_receptive_field(2, 2)) == (27, 17)  # quick, smoke
    paper = RDN(**PROFILES["paper"]["params.rdn"])
    assert paper.receptive_field() == 41 and paper.receptive_field(encode=True) == 39
    # declared for `ssl-bench list`: the defaults (standard), or any options, without building
    assert RDN.receptive_field_for() == 265
    assert RDN.receptive_field_for(**PROFILES["paper"]["params.rdn"]) == 41
    assert RDN.receptive_field_for(preset="compact", num_blocks=8, growth=99) == 1 + 2 * (32 + 4)


def test_rdn_receptive_field_is_the_gradient_support_paper_profile_depth():
    # the paper profile's depth (D=4, C=4) at a tiny width, a 49x49 input, its centre pixel
    net = positive_constant(RDN(preset="compact", growth=2, features=2))
    assert gradient_support(net, (49, 49), 24, 24) == (41, 41) == (net.receptive_field(),) * 2
    assert gradient_support(net.encode, (49, 49), 24, 24) == (39, 39)
    # the field is centred: a pixel 20 rows from the border still sees all of it, 19 do not
    assert gradient_support(net, (49, 49), 20, 24) == (41, 41)
    assert gradient_support(net, (49, 49), 19, 24) == (40, 41)


def test_rdn_receptive_field_is_the_gradient_support_standard_depth():
    # the standard depth (D=16, C=8), checkpointed as its preset is, at width 1; a tall narrow
    # input (3x3 convolutions: the field is as wide as it is tall)
    net = positive_constant(RDN(preset="standard", growth=1, features=1))
    assert net.checkpoint
    rows, _ = gradient_support(net, (269, 3), 134, 1)
    assert rows == net.receptive_field() == 265


def test_unet_receptive_field_is_the_gradient_support():
    # the U-Net's (depth 4, any width): 140 px at the bottleneck (encode), and 188 or 204 px for
    # forward, depending on the output pixel's position modulo 16 (the pooling grid); see unet.py.
    # Max-pooling passes the gradient to one pixel of four: average pooling has its dependencies.
    net = positive_constant(UNet(width=1, depth=4)).eval()
    net.pool = nn.AvgPool2d(2)
    rows = {gradient_support(net, (256, 16), r, 8)[0] for r in range(120, 136)}
    assert rows == {188, 204}
    assert gradient_support(net.encode, (256, 16), 8, 0)[0] == 140 == 9 * 2**4 - 4


def test_list_networks_verbose_shows_the_declared_receptive_field():
    result = CliRunner().invoke(main, ["list", "networks", "--verbose"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "receptive field: 265 px with the default options" in result.output
    assert "preset = 'standard'" in result.output


# ---------------------------------------------------------------- heads
@pytest.mark.parametrize("name", ["resnet18", "test_resnet"])
@pytest.mark.parametrize("size", SIZES)
def test_unet_decoder_shapes(name, size):
    model = timm.create_model(name, in_chans=1, num_classes=1)
    decoder = UNetDecoder.for_backbone(model, out_chans=1)
    x = torch.randn(2, 1, *size)
    feats = model.forward_intermediates(x, intermediates_only=True)
    assert decoder(feats, size).shape == (2, 1, *size)


def test_unet_decoder_scales_down_for_tiny_backbones():
    tiny = UNetDecoder.for_backbone(timm.create_model("test_resnet", in_chans=1))
    big = UNetDecoder.for_backbone(timm.create_model("resnet18", in_chans=1))
    assert big.decoder_channels == (256, 128, 64, 32, 16)
    assert tiny.decoder_channels == (192, 48, 32, 32, 16)
    assert n_params(tiny) < n_params(big)


def test_unet_decoder_explicit_channels_and_errors():
    dec = UNetDecoder([8, 16, 32], out_chans=3, decoder_channels=(12, 6, 4))
    feats = [torch.randn(1, c, 16 >> i, 8 >> i) for i, c in enumerate([8, 16, 32])]
    assert dec(feats, (33, 17)).shape == (1, 3, 33, 17)
    with pytest.raises(ValueError, match="3 feature maps"):
        dec(feats[:2], (32, 16))
    with pytest.raises(ValueError, match="decoder_channels"):
        UNetDecoder([8, 16, 32], decoder_channels=(4, 4))


@pytest.mark.parametrize(
    "name", ["resnet50", "resnet18", "test_resnet", "efficientnet_b0", "convnext_atto"]
)
def test_feature_info_matches_intermediates(name):
    model = timm.create_model(name, in_chans=1, num_classes=1).eval()
    x = torch.randn(1, 1, 64, 32)
    with torch.no_grad():
        intermediates, final = encode_multiscale(model, x)
        torch.testing.assert_close(final, model.forward_features(x))
    chs, reds = backbone_feature_info(model)
    assert chs == [f.shape[1] for f in intermediates]
    assert reds == [64 // f.shape[-2] for f in intermediates]


def test_projection_mlp():
    torch.manual_seed(0)
    head = ProjectionMLP(16, hidden_dim=32, out_dim=8)
    fmap = torch.randn(6, 16, 3, 2)
    out = head(fmap)
    assert out.shape == (6, 8)
    torch.testing.assert_close(out, head(fmap.mean(dim=(2, 3))))
    # final non-affine BatchNorm: every output dimension standardised over the batch
    torch.testing.assert_close(out.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    assert not any(p.shape == (8,) for p in head.net[-1].parameters())
    plain = ProjectionMLP(16, out_dim=4, final_norm=False)
    assert plain(torch.randn(3, 16)).shape == (3, 4)
    assert not isinstance(plain.net[-1], torch.nn.BatchNorm1d)
    with pytest.raises(ValueError):
        head(torch.randn(2, 15))


# ---------------------------------------------------------------- backbones
def test_create_backbone_local_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18")  # 3-channel, 1000 classes, random weights
    state = source.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    model = create_backbone("resnet18", pretrained=str(path), in_chans=1, num_classes=1)
    loaded = model.state_dict()
    # the RGB stem unchanged, behind the weights' input normalisation (tests/test_imagenet_input.py)
    assert torch.equal(loaded["conv1.conv.weight"], state["conv1.weight"])
    for key, value in state.items():
        if key == "conv1.weight" or key.startswith("fc."):
            continue
        assert torch.equal(loaded[key], value), key
    assert model.fc.weight.shape == (1, 512)  # classifier re-initialised for 1 class

    # a checkpoint of our own loads unchanged, with its input normalisation
    own = tmp_path / "own.pth"
    torch.save(model.state_dict(), own)
    again = create_backbone("resnet18", pretrained=own)
    assert torch.equal(again.conv1.conv.weight, model.conv1.conv.weight)
    assert input_normalisation(again) == input_normalisation(model) is not None
    # and a 1-channel one (a randomly initialised backbone's) as it is, without normalisation
    grey = tmp_path / "grey.pth"
    torch.save(create_backbone("resnet18").state_dict(), grey)
    plain = create_backbone("resnet18", pretrained=grey)
    assert torch.equal(plain.conv1.weight, torch.load(grey)["conv1.weight"]) and input_normalisation(plain) is None


def test_create_backbone_errors(tmp_path):
    with pytest.raises(ConfigError, match="resnet50"):
        create_backbone("resnet5")
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match="nope.pth"):
        create_backbone("resnet18", pretrained=missing)
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="r18.pth"):
        create_backbone("resnet50", pretrained=tmp_path / "r18.pth")


def test_backbone_heads():
    model = create_backbone("test_resnet").eval()
    x = torch.randn(3, 1, 64, 32)
    intermediates, final = encode_multiscale(model, x)
    assert len(intermediates) == 5
    assert pooled_features(model, final).shape == (3, num_pooled_features(model))
    assert classifier_logits(model, final).shape == (3,)
    # a model whose pre-logits width differs from num_features
    mnv3 = create_backbone("mobilenetv3_small_100").eval()
    _, final = encode_multiscale(mnv3, x)
    assert pooled_features(mnv3, final).shape[1] == num_pooled_features(mnv3) != mnv3.num_features
