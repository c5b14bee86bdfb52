"""FoldedNet and OnnxNet compute what KeywordNet computes (BatchNorms folded, straight-line forward / one ONNX
Runtime graph), for every block kind; `inference_forward` picks the backend asked for."""

import numpy as np
import pytest
import torch

from drsn_asr.runtime.config import BLOCK_KINDS, FeatureConfig, ModelConfig
from drsn_asr.runtime.inference import FoldedNet, OnnxNet, inference_forward, onnxruntime_available
from drsn_asr.runtime.model import KeywordNet, SequenceNet


def _net(block, sequence=False, **config):
    torch.manual_seed(0)
    if sequence:  # the head over speech embeddings: 96-number frames, 1x3 convolutions over time
        features = FeatureConfig(kind="speech_embedding", n_mels=96, window_ms=782.0, hop_ms=80.0)
        net = SequenceNet(ModelConfig(block=block, window_s=1.2, **config), features, 5)
    else:
        net = KeywordNet(ModelConfig(block=block, **config), FeatureConfig(), 5)
    for m in net.modules():  # statistics and affine terms far from their defaults, as after training
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.3, 3)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("block", BLOCK_KINDS)
@pytest.mark.parametrize("strides", [(2, 2, 2), (1, 2, 2)])
@pytest.mark.parametrize("views", [(False, False), (True, False), (True, True), (False, True)])
def test_folded_equals_module(block, strides, views):
    net = _net(block, stage_strides=strides, relative_input=views[0], floor_input=views[1])
    x = torch.randn(3, 40, net.window_frames) * 3 - 5
    with torch.no_grad():
        expected = net(x)
        got = FoldedNet(net)(x)
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)


@pytest.mark.parametrize("block", BLOCK_KINDS)
@pytest.mark.parametrize("views", [(False, False), (True, False), (True, True)])
def test_onnx_equals_module(block, views):
    net = _net(block, stage_strides=(1, 2, 2), relative_input=views[0], floor_input=views[1])
    x = torch.randn(3, 40, net.window_frames) * 3 - 5
    with torch.no_grad():
        expected = net(x)
        onnx = OnnxNet(FoldedNet(net), threads=1)
        got = onnx(x)
        probs = onnx.probs(x.numpy())
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
    assert np.allclose(probs, torch.softmax(expected, dim=1).numpy(), atol=1e-5)
    assert np.allclose(onnx.probs(x[:1].numpy()), probs[:1], atol=1e-6)  # batch 1, the live case, too


def test_backend_choice():
    net = _net("drsn_cw")
    assert isinstance(inference_forward(net, "torch"), FoldedNet)
    auto = inference_forward(net)
    assert isinstance(auto, OnnxNet if onnxruntime_available() else FoldedNet)
    assert isinstance(inference_forward(net, "onnxruntime"), OnnxNet)
    assert inference_forward(net, "onnxruntime") is inference_forward(net, "onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        inference_forward(net, "tensorrt")


def test_cached_per_network_and_rebuilt_when_weights_change():
    net = _net("drsn_cw")
    first = inference_forward(net)
    assert inference_forward(net) is first
    with torch.no_grad():
        net.units[0].bn2.running_mean.add_(1.0)  # an in-place change, as an optimizer or load_state_dict makes
    second = inference_forward(net)
    assert second is not first
    x = torch.randn(2, 40, net.window_frames)
    with torch.no_grad():
        assert torch.allclose(second(x), net(x), atol=1e-4)


def test_training_mode_and_subclasses_are_used_as_they_are():
    net = _net("resnet").train()
    assert inference_forward(net) is net

    class Custom(KeywordNet):
        pass

    custom = Custom(ModelConfig(), FeatureConfig(), 3).eval()
    assert inference_forward(custom) is custom
    with pytest.raises(ValueError, match="eval mode"):
        FoldedNet(net)


@pytest.mark.parametrize("block", BLOCK_KINDS)
@pytest.mark.parametrize("strides", [(1, 1, 1), (1, 2, 2)])
def test_folded_and_onnx_equal_the_head_over_speech_embeddings(block, strides):
    net = _net(block, sequence=True, stage_strides=strides)
    x = torch.randn(3, 96, net.window_frames) * 10
    with torch.no_grad():
        expected = net(x)
        folded = FoldedNet(net)(x)
        onnx = OnnxNet(FoldedNet(net), threads=1)
        got = onnx(x)
    for out in (folded, got):
        assert torch.allclose(out, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
    assert np.allclose(onnx.probs(x[:1].numpy()), torch.softmax(expected[:1], dim=1).numpy(), atol=1e-5)
    assert isinstance(inference_forward(net, "torch"), FoldedNet)
    assert isinstance(inference_forward(net, "onnxruntime"), OnnxNet)


def test_a_batch_threaded_session_runs_large_batches_on_its_batch_threads_with_the_same_outputs():
    """`cpu_session(model, 1, 2)` is two sessions: batches from BATCH_THREADS_MIN_ROWS rows run on the 2-thread one,
    smaller ones on the 1-thread one; both give the one-thread session's outputs (to float rounding)."""
    from drsn_asr.runtime.inference import BATCH_THREADS_MIN_ROWS, BatchThreadedSession, _onnx_graph, cpu_session

    net = _net("drsn_cw")
    graph = _onnx_graph(FoldedNet(net))
    pair, single = cpu_session(graph, 1, 2), cpu_session(graph, 1)
    assert isinstance(pair, BatchThreadedSession) and not isinstance(cpu_session(graph, 2, 2), BatchThreadedSession)
    assert pair.small.get_session_options().intra_op_num_threads == 1
    assert pair.large.get_session_options().intra_op_num_threads == 2
    for rows, chosen in ((BATCH_THREADS_MIN_ROWS - 1, pair.small), (BATCH_THREADS_MIN_ROWS, pair.large)):
        assert pair.for_batch(rows) is chosen
        x = np.random.default_rng(rows).standard_normal((rows, net.features.n_mels, net.window_frames))
        x = x.astype(np.float32)
        got, expected = pair.run(["probs"], {"logmel": x})[0], single.run(["probs"], {"logmel": x})[0]
        assert np.allclose(got, expected, rtol=0, atol=1e-5)
    onnx = inference_forward(net, "onnxruntime", threads=1, batch_threads=2)
    assert isinstance(onnx.session, BatchThreadedSession)
    assert onnx is not inference_forward(net, "onnxruntime", threads=1)  # cached apart
