"""The shrinkage math of the DRSN blocks (Zhao et al. 2020), not just shapes."""

import pytest
import torch

from drsn_asr.runtime.config import FeatureConfig, ModelConfig
from drsn_asr.runtime.model import (KeywordNet, ResidualUnit, Shrinkage, SqueezeExcite, Threshold, count_parameters, soft_threshold,
                            stem_input)


def _trained_like_threshold(channels, per_channel, seed=0):
    torch.manual_seed(seed)
    t = Threshold(channels, per_channel, reduction=2)
    t.train()
    t(torch.randn(16, channels, 5, 7))  # give BatchNorm real statistics
    return t.eval()


@pytest.mark.parametrize("per_channel", [True, False])
def test_tau_positive_and_at_most_mean_abs(per_channel):
    t = _trained_like_threshold(8, per_channel)
    x = torch.randn(4, 8, 6, 9) * torch.linspace(0.1, 3, 8)[None, :, None, None]
    tau = t(x)
    abs_mean = x.abs().mean(dim=(2, 3))
    assert (tau > 0).all()
    if per_channel:
        assert tau.shape == (4, 8, 1, 1)
        assert (tau[:, :, 0, 0] <= abs_mean).all()
    else:
        assert tau.shape == (4, 1, 1, 1)
        assert (tau[:, 0, 0, 0] <= abs_mean.mean(dim=1)).all()


def test_gap_is_of_absolute_values():
    """GAP(|x|): flipping the sign of x must not change τ (GAP of x would change it)."""
    t = _trained_like_threshold(6, True)
    x = torch.randn(3, 6, 4, 4) + 0.5
    assert torch.allclose(t(x), t(-x))


def test_soft_threshold_zero_inside_and_shrunk_by_tau_outside():
    x = torch.randn(2, 3, 10, 10)
    tau = torch.tensor([0.2, 0.5, 1.0])[None, :, None, None].expand(2, 3, 1, 1)
    y = soft_threshold(x, tau)
    inside = x.abs() <= tau
    assert (y[inside] == 0).all()
    outside = ~inside
    assert torch.allclose(y[outside].abs(), (x.abs() - tau.expand_as(x))[outside])
    assert (torch.sign(y[outside]) == torch.sign(x[outside])).all()


def test_soft_threshold_gradient_is_zero_or_one():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    tau = torch.full((2, 4, 1, 1), 0.7)
    soft_threshold(x, tau).sum().backward()
    g = x.grad
    assert set(g.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(g == 1, x.detach().abs() > 0.7)


def test_cw_thresholds_differ_across_channels_and_samples():
    t = _trained_like_threshold(8, True)
    x = torch.randn(4, 8, 6, 6) * torch.arange(1, 5).float()[:, None, None, None]
    tau = t(x)[:, :, 0, 0]
    assert tau.std(dim=1).min() > 0  # differs across channels
    assert tau.std(dim=0).min() > 0  # differs across samples of the batch


def test_cs_gives_one_threshold_per_sample():
    s = Shrinkage(8, per_channel=False, reduction=2)
    s.train()
    s(torch.randn(16, 8, 5, 5))
    s.eval()
    x = torch.randn(3, 8, 5, 5) * torch.tensor([0.5, 1, 2])[:, None, None, None]
    tau = s.threshold(x)
    assert tau.shape == (3, 1, 1, 1)
    assert len(set(tau.flatten().tolist())) == 3
    y = s(x)
    for b in range(3):  # every channel of a sample is shrunk by the same amount
        outside = x[b].abs() > tau[b]
        assert torch.allclose((x[b].abs() - y[b].abs())[outside], tau[b].expand_as(x[b])[outside])


def test_noise_is_shrunk_more_than_sparse_speech_like_input_of_same_energy():
    """τ scales with mean|x|: dense noise (high mean|x| for its energy) loses a larger share of its energy
    than sparse, peaky features (formant-like) of the same energy."""
    torch.manual_seed(0)
    t = _trained_like_threshold(4, True)
    s = Shrinkage(4, True, 2)
    s.threshold = t
    noise = torch.randn(1, 4, 20, 50)
    speech = torch.zeros(1, 4, 20, 50)
    speech[:, :, 3:6, 10:40] = torch.randn(1, 4, 3, 30) * 4
    speech *= noise.square().sum().sqrt() / speech.square().sum().sqrt()
    kept = lambda x: (s(x).square().sum() / x.square().sum()).item()
    assert kept(speech) > kept(noise) + 0.1


def test_residual_unit_adds_shrunk_branch_to_shortcut():
    unit = ResidualUnit(8, 8, 1, "drsn_cw", 2).eval()
    x = torch.randn(2, 8, 10, 10)
    captured = {}
    unit.branch_end.register_forward_hook(lambda m, i, o: captured.update(out=o))
    y = unit(x)
    assert torch.allclose(y, captured["out"] + x)
    strided = ResidualUnit(8, 16, 2, "drsn_cw", 2).eval()
    assert strided(x).shape == (2, 16, 5, 5)


def test_se_reweights_channels_without_zeroing():
    se = SqueezeExcite(8, 2).eval()
    x = torch.randn(2, 8, 4, 4)
    ratio = se(x) / x
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))


@pytest.mark.parametrize("block", ["drsn_cw", "drsn_cs", "resnet", "se_resnet"])
def test_every_backbone_builds_and_classifies(block):
    net = KeywordNet(ModelConfig(block=block), FeatureConfig(), 22).eval()
    out = net(torch.randn(3, 40, net.window_frames))
    assert out.shape == (3, 22)
    assert 50_000 <= count_parameters(net) <= 150_000
    has_shrinkage = any(isinstance(m, Shrinkage) for m in net.modules())
    assert has_shrinkage == block.startswith("drsn")


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    net = KeywordNet(ModelConfig(), FeatureConfig(), 3)
    x = torch.randn(24, 40, 98)
    y = torch.arange(24) % 3
    x[y == 1, :10] += 3
    x[y == 2, 30:] += 3
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5


def test_unknown_block_names_the_choices():
    with pytest.raises(ValueError, match="drsn_cw"):
        ModelConfig(block="drsn")


def test_relative_input_channel_ignores_level_and_steady_colouring_but_keeps_the_absolute_one():
    torch.manual_seed(0)
    logmel = torch.randn(2, 40, 98)
    colouring = torch.linspace(-8, 3, 40)[None, :, None]  # a gain per band, steady over the window (channel, hum)
    plain, shifted = stem_input(logmel, True), stem_input(logmel + colouring + 4.0, True)
    assert plain.shape == (2, 2, 40, 98)
    assert torch.allclose(plain[:, 1], shifted[:, 1], atol=1e-5)
    assert torch.allclose(shifted[:, 0] - plain[:, 0], (colouring + 4.0).expand(2, 40, 98))
    assert stem_input(logmel, False).shape == (2, 1, 40, 98)
    net = KeywordNet(ModelConfig(relative_input=True), FeatureConfig(), 22).eval()
    assert net.stem.in_channels == 2 and net(logmel).shape == (2, 22)


def test_floor_input_reads_each_band_above_its_quietest_frame():
    torch.manual_seed(0)
    noise_floor = torch.linspace(-10, 0, 40)[None, :, None]  # steady noise, a different level in each band
    logmel = noise_floor + torch.rand(2, 40, 98) * 0.5  # the noise's own small flutter
    logmel[:, 5:15, 40:60] += 6.0  # a word lifts some bands for 0.2 s
    views = stem_input(logmel, True, True)
    assert views.shape == (2, 3, 40, 98)
    floor = views[:, 2]
    assert floor.min() == 0 and bool((floor[:, :, :40] < 0.5).all())  # noise alone reads as ~0 in every band
    assert bool((floor[:, 5:15, 40:60] > 5.9).all())  # the word reads as its height above the noise
    # the mean view does not: the word raises the mean of its bands, so their noise reads below zero there
    assert bool((views[:, 1, 5:15, :40] < -0.5).all()) and bool((floor[:, 5:15, :40] >= 0).all())
    assert torch.allclose(stem_input(logmel + 7.0, True, True)[:, 2], floor, atol=1e-5)  # level-blind like the mean view
    assert torch.equal(stem_input(logmel, False, True)[:, 1], floor)  # without the mean view it comes second
    net = KeywordNet(ModelConfig(relative_input=True, floor_input=True), FeatureConfig(), 22).eval()
    assert net.stem.in_channels == 3 and net(logmel).shape == (2, 22)


def test_sequence_net_is_a_1d_drsn_over_time_with_channelwise_thresholds():
    from drsn_asr.runtime.model import SequenceNet, build_net

    features = FeatureConfig(kind="speech_embedding", n_mels=96, window_ms=782.0, hop_ms=80.0)
    config = ModelConfig(stem_channels=16, stage_channels=(16, 24), stage_blocks=(1, 1), stage_strides=(1, 1),
                         window_s=1.2)
    net = build_net(config, features, 5)
    assert isinstance(net, SequenceNet) and net.window_frames == 6
    assert isinstance(build_net(ModelConfig(), FeatureConfig(), 5), KeywordNet)
    taus = []
    hooks = [m.register_forward_hook(lambda m, i, o: taus.append(o)) for m in net.modules() if isinstance(m, Threshold)]
    x = torch.randn(3, 96, 6)
    assert net.eval()(x).shape == (3, 5)
    assert len(taus) == 2 and taus[0].shape == (3, 16, 1, 1)  # one threshold per channel and sample
    assert taus[0].std(dim=1).min() > 0
    for h in hooks:
        h.remove()
    for unit in net.units:  # convolutions run over time only: kernel 1 across the (absent) frequency axis
        assert unit.conv1.kernel_size == (1, 3)
    shifted = x.clone()
    shifted[:, :, -1] += 5.0  # the last frame matters: the window is what is classified
    assert not torch.allclose(net(x), net(shifted))


def test_speech_embedding_frame_is_fixed_by_the_pretrained_network():
    with pytest.raises(ValueError, match="speech_embedding needs"):
        FeatureConfig(kind="speech_embedding")
    with pytest.raises(ValueError, match="logmel, speech_embedding"):
        FeatureConfig(kind="mfcc")
