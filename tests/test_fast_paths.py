"""The fast paths compute what the plain ones do: channels_last, bf16 autocast, blame pass sizing."""

from __future__ import annotations

import copy

import pytest
import torch

from deeppatch.data import DatasetInfo, TensorSplit, load_splits
from deeppatch.evaluation import predict
from deeppatch.perturbations import get_perturbation
from deeppatch.technique import blame as blame_module
from deeppatch.technique.blame import blame, images_per_pass
from deeppatch.technique.patching import PatchedNetwork, plan_patches
from deeppatch.training import OptimConfig, TrainLoop
from tests.models_util import seeded_model

CPU = torch.device("cpu")
RGB = DatasetInfo("rgb", 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
ARCHS = ["tinycnn", "smallcnn", "resnet20", "vgg11_bn", "mobilenetv2_x0_5", "shufflenetv2_x0_5"]


def _images(n, info=RGB, seed=0):
    return torch.rand(n, *info.image_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_matches_contiguous(arch):
    model = seeded_model(arch, RGB)
    x = _images(16)
    with torch.inference_mode():
        ref = model(x)
        fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        fast = fast_model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_channels_last_matches_for_the_patched_network():
    base = seeded_model("resnet20", RGB)
    network = PatchedNetwork(base, plan_patches(base, None, side="random", seed=0).specs, seed=0).eval()
    x = _images(16)
    with torch.inference_mode():
        for mode in ("original", "patched"):
            ref = network.run(x, mode)
            fast = copy.deepcopy(network).to(memory_format=torch.channels_last).run(
                x.contiguous(memory_format=torch.channels_last), mode)
            torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["smallcnn", "resnet20", "mobilenetv2_x0_5"])
def test_bf16_autocast_stays_close_to_fp32(arch):
    """bf16 keeps 8 mantissa bits: logits within a few percent, and the same class wherever fp32's
    top-2 margin is clearly above that error."""
    model = seeded_model(arch, RGB)
    x = _images(64, seed=1)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x).float()
    scale = ref.abs().max()
    err = (fast - ref).abs().max()
    assert err <= 0.05 * scale + 1e-3
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 4 * err
    assert (fast.argmax(1) == ref.argmax(1))[clear].all()


def test_training_with_channels_last_matches_contiguous():
    """One SGD step of the training loop with and without channels_last (fp32, CPU).

    Not to 1e-5: PyTorch's CPU BatchNorm in training mode is much less accurate on channels_last
    tensors (measured: output error vs float64 ~40x the contiguous kernel's, 7e-4 relative at a
    mean/std of 300, as after a ReLU), which moves resnet20's parameter updates by up to ~0.5 %
    relative (measured). The update must agree to 2 %; eval-mode outputs agree to 1e-5 (above).
    """
    data = TensorSplit((_images(32) * 255).to(torch.uint8), torch.arange(32) % 10)
    start = seeded_model("resnet20", RGB).state_dict()
    updates = []
    for channels_last in (False, True):
        model = seeded_model("resnet20", RGB)
        loop = TrainLoop(model=model, params=list(model.parameters()), batches=lambda epoch: data.batches(32),
                         num_batches=1, epochs=1, optim=OptimConfig(lr=0.05), select="last",
                         channels_last=channels_last, show_progress=False)
        loop.run()
        updates.append({k: v - start[k] for k, v in model.state_dict().items() if v.is_floating_point()})
    for key, ref in updates[0].items():
        if ref.norm() == 0:
            continue
        rel = ((updates[1][key] - ref).norm() / ref.norm()).item()
        assert rel <= 2e-2, key


def test_predict_runs_in_inference_mode_and_matches_the_model():
    model = seeded_model("smallcnn", RGB)
    split = TensorSplit((_images(40) * 255).to(torch.uint8), torch.zeros(40, dtype=torch.long))
    pred = predict(model, split, batch_size=16, device=CPU)
    assert torch.is_inference(pred)
    with torch.inference_mode():
        assert torch.equal(pred, model(split.x.float() / 255).argmax(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predict_on_cuda_bf16_channels_last_agrees_with_fp32():
    model = seeded_model("resnet20", RGB).cuda()
    split = TensorSplit((_images(256) * 255).to(torch.uint8), torch.zeros(256, dtype=torch.long))
    fast = predict(model, split, device="cuda")
    ref = predict(model, split, device="cuda", amp=False)
    assert (fast == ref).float().mean() >= 0.95


def test_blame_pass_size_is_bounded_in_bytes_on_the_cpu_only():
    assert images_per_pass(1024, 4096, CPU) == min(4096, blame_module.CPU_PASS_BYTES // 1024)
    assert images_per_pass(10**9, 4096, CPU) == 1
    assert images_per_pass(1024, 4096, torch.device("cuda")) == 4096


@pytest.mark.parametrize("method", ["perfloss", "featswap"])
@pytest.mark.parametrize("arch", ["tinycnn", "resnet20"])
def test_engines_stay_exact_when_passes_split_the_batch(arch, method, monkeypatch):
    """A tiny byte budget makes every pass a slice of a batch: the counts must not change."""
    digits = load_splits("digits", val_fraction=0.1)
    family = get_perturbation("blur", sigmas=[0.5, 1.0])
    model = seeded_model(arch, digits.info)
    layers = ["features.0", "features.4"] if arch == "tinycnn" else ["conv1", "layer2.0.conv1", "layer3.2.conv2"]
    kwargs = dict(seed=0, device=CPU, batch_size=24, layers=layers)
    naive = blame(model, method, digits.val.head(24), family, engine="naive", **kwargs)
    monkeypatch.setattr(blame_module, "CPU_PASS_BYTES", 7 * 16 * 8 * 8 * 4)  # 7 images of the widest 8x8 layer
    for engine in ("suffix", "batched"):
        fast = blame(model, method, digits.val.head(24), family, engine=engine, **kwargs)
        assert fast.scores == naive.scores, engine
