"""Patch units, dual BN statistics, routing, the indicator and the switched model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeppatch.corrector import checkpoint_restorers
from deeppatch.data import load_splits
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.technique.patching import DualBN, PatchedConv, PatchedNetwork, plan_patches
from deeppatch.technique.switch import LearnedGate, ReferenceGate, SwitchedModel, auroc, best_threshold
from tests.models_util import bn_trained


@pytest.fixture(scope="module")
def info():
    return load_splits("digits", val_fraction=0.1).info


def _switched(arch, info, *, ratio=0.5, unit="replace", gate_threshold=0.0, seed=0):
    torch.manual_seed(seed)
    base = bn_trained(create_model(arch, info), info.image_shape)
    plan = plan_patches(base, None, ratio=ratio, side="random", unit=unit, seed=seed)
    net = PatchedNetwork(base, plan.specs, seed=seed)
    conv, bn = net.locate_indicator(torch.rand(2, *info.image_shape))
    net.train()
    with torch.no_grad():  # give the patched BN statistics their own values
        net(torch.rand(64, *info.image_shape) * 0.5)
    net.eval()
    ref = ReferenceGate(net.net.get_submodule(conv).indices.tolist())
    learned = LearnedGate(net.net.get_submodule(conv).conv.out_channels, width=4)
    learned.threshold.fill_(gate_threshold)
    return base, SwitchedModel(net, ref, learned, gate="learned").eval(), (conv, bn)


def _split_threshold(scores: torch.Tensor, below: int) -> float:
    """A threshold half-way between two neighbouring scores: no input sits on it."""
    s = scores.sort().values
    return float((s[below - 1] + s[below]) / 2)


@torch.inference_mode()
def _route_half(model, x: torch.Tensor) -> torch.Tensor:
    """Set the learned gate's threshold so that half of `x` takes the patched path; the routing mask."""
    _, scores = model.decisions(x)
    model.learned_gate.threshold.fill_(_split_threshold(scores, len(x) // 2))
    routed, _ = model.decisions(x)
    assert 0 < int(routed.sum()) < len(x)
    return routed

def test_original_mode_and_original_route_are_bit_exact(info):
    base, model, _ = _switched("resnet20", info)
    x = torch.rand(32, *info.image_shape)
    with torch.inference_mode():
        expected = base(x)
        assert torch.equal(model.configure(mode="original")(x), expected)
        model.configure(mode="switch")
        model.learned_gate.threshold.fill_(1e9)  # nothing looks perturbed: all inputs take the original path
        assert torch.equal(model(x), expected)
        # a mixed batch: the inputs routed to the original path still match the original model bit for bit
        routed = _route_half(model, x)
        out = model(x)
        assert torch.equal(out[~routed], expected[~routed])
        assert not torch.allclose(out[routed], expected[routed])


def test_input_gradients_through_a_mixed_batch(info):
    """Attacks differentiate the switched model: the inputs on the original path get the original model's
    input gradients, the patched ones the patched model's (patched rows are written in place)."""
    base, model, _ = _switched("resnet20", info)
    x = torch.rand(16, *info.image_shape)
    routed = _route_half(model, x)

    def input_grad(net):
        xg = x.clone().requires_grad_(True)
        (net(xg) * torch.linspace(-1, 1, 10)).sum().backward()
        return xg.grad

    mixed = input_grad(model.configure(mode="switch"))
    assert torch.allclose(mixed[~routed], input_grad(base)[~routed], atol=1e-6)
    patched = input_grad(model.configure(mode="patched"))
    assert torch.allclose(mixed[routed], patched[routed], atol=1e-5)
    model.configure(mode="switch")

@pytest.mark.parametrize("arch,unit", [("tinycnn", "replace"), ("resnet20", "replace"), ("mobilenetv2_x0_5", "replace"),
                                       ("resnet20", "crtunit"), ("mobilenetv2_x0_5", "crtunit")])
def test_per_sample_routing_equals_running_each_input_alone(arch, unit, info):
    _, model, _ = _switched(arch, info, unit=unit)
    x = torch.rand(12, *info.image_shape)
    with torch.inference_mode():
        routed = _route_half(model, x)
        batched = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
        alone_routes = torch.cat([model.decisions(x[i : i + 1])[0] for i in range(len(x))])
    assert torch.equal(alone_routes, routed)
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)


def test_batch_majority_routes_the_whole_batch(info):
    _, model, _ = _switched("tinycnn", info)
    x = torch.rand(9, *info.image_shape)
    with torch.inference_mode():
        _, scores = model.decisions(x)
        model.learned_gate.threshold.fill_(_split_threshold(scores, 3))  # 6 of 9 look perturbed
        model.configure(routing="batch-majority")
        routed, _ = model.decisions(x)
        assert bool(routed.all())
        assert torch.equal(model(x), model.configure(mode="patched")(x))


def test_replace_unit_rewrites_only_the_selected_channels_in_place(info):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1, dilation=1, bias=False)
    from deeppatch.technique.routing import Router

    unit = PatchedConv(conv, [6, 1, 4], "replace", False, Router())
    assert unit.cru.kernel_size == conv.kernel_size and unit.cru.padding == conv.padding and unit.cru.bias is None
    x = torch.rand(2, 3, 5, 5)
    y = conv(x)
    out = unit.patch(x, y)
    keep = [0, 2, 3, 5, 7]
    assert torch.equal(out[:, keep], y[:, keep])
    assert torch.allclose(out[:, [6, 1, 4]], unit.cru(x))  # channel order preserved (reference bug 7)



@pytest.mark.parametrize("bias,stride,padding_mode", [(False, 1, "zeros"), (True, 2, "reflect")])
def test_folded_replace_unit_equals_conv_then_overwrite(bias, stride, padding_mode):
    """Patched mode runs one conv with the unit's filters written into the weight: same output, same gradients."""
    from deeppatch.technique.routing import Route, Router

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=1, bias=bias, padding_mode=padding_mode).double()
    unit = PatchedConv(conv, [6, 1, 4], "replace", False, Router()).double()
    assert unit.foldable
    conv.requires_grad_(False)
    x = torch.rand(3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    folded = unit.folded(x)
    reference = unit.patch(x, conv(x))
    assert torch.allclose(folded, reference, rtol=0, atol=1e-12)
    g = torch.rand_like(folded)
    grads = torch.autograd.grad(folded, [x, unit.cru.weight], g)
    ref_grads = torch.autograd.grad(reference, [x, unit.cru.weight], g)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    with unit.router.use(Route("patched")):
        assert torch.equal(unit(x), folded)  # what patched mode (training, always patched) runs
    grouped = nn.Conv2d(4, 8, 3, groups=2)
    assert not PatchedConv(grouped, [1], "replace", False, Router()).foldable
    assert not PatchedConv(conv, [1], "crtunit", False, Router()).foldable

def test_crtunit_is_written_back_in_place(info):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 6, 3, padding=1, bias=False)
    from deeppatch.technique.routing import Router

    unit = PatchedConv(conv, [5, 0], "crtunit", False, Router()).eval()
    x = torch.rand(2, 2, 6, 6)
    y = conv(x)
    out = unit.patch(x, y)
    assert torch.equal(out[:, 1:5], y[:, 1:5])
    assert torch.allclose(out[:, [5, 0]], unit.cru(y[:, [5, 0]]))


def test_plan_k_sides_and_grouped_convs(info):
    model = create_model("mobilenetv2_x0_5", info)
    ranking = {n: {"indices": list(reversed(range(m.out_channels)))}
               for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    front = plan_patches(model, ranking, ratio=0.25)
    rear = plan_patches(model, ranking, ratio=0.25, side="rear")
    for f, r in zip(front.specs, rear.specs, strict=True):
        c = model.get_submodule(f.layer).out_channels
        k = int(c * 0.25)
        assert f.indices == list(reversed(range(c)))[:k] and r.indices == list(reversed(range(c)))[c - k:]
    assert all(model.get_submodule(s.layer).groups == 1 for s in front.specs)
    assert any("grouped" in why for why in front.skipped.values())
    dw = plan_patches(model, ranking, ratio=0.25, grouped="depthwise")
    assert any(s.depthwise for s in dw.specs)
    a = plan_patches(model, None, side="random", seed=1)
    b = plan_patches(model, None, side="random", seed=1)
    c = plan_patches(model, None, side="random", seed=2)
    assert [s.indices for s in a.specs] == [s.indices for s in b.specs] != [s.indices for s in c.specs]
    tiny = plan_patches(create_model("tinycnn", info), None, ratio=0.1, side="random")
    assert tiny.specs[0].layer == "features.4" and "k = floor(8 x 0.1) = 0" in tiny.skipped["features.0"]
    with pytest.raises(DeepPatchError, match="valid choices: front, rear, random"):
        plan_patches(model, ranking, side="middle")


def test_depthwise_patch_reads_only_its_own_input_channel(info):
    model = create_model("mobilenetv2_x0_5", info)
    plan = plan_patches(model, None, side="random", grouped="depthwise", ratio=0.5)
    net = PatchedNetwork(model, plan.specs)
    pc = next(m for _, m in net.patched_convs() if m.depthwise)
    assert pc.cru.groups == len(pc.indices) == pc.cru.in_channels
    x = torch.rand(2, pc.conv.in_channels, 4, 4)
    out = pc.patch(x, pc.conv(x))
    assert torch.allclose(out[:, pc.indices], pc.cru(x[:, pc.indices]))


def test_training_changes_only_the_patch_and_the_patched_statistics(info):
    torch.manual_seed(0)
    base = bn_trained(create_model("tinycnn", info), info.image_shape)
    net = PatchedNetwork(base, plan_patches(base, None, side="random", ratio=0.5).specs)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = net.freeze_all_but_patch()
    assert all(".cru." in f".{n}" for n, p in net.named_parameters() if p.requires_grad)
    opt = torch.optim.SGD(params, lr=0.1)
    net.train()
    for _ in range(3):
        loss = nn.functional.cross_entropy(net(torch.rand(16, *info.image_shape)), torch.randint(0, 10, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = net.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        if ".cru." in key or "patched_" in key:
            if "num_batches" not in key:
                assert changed, key
        else:
            assert not changed, key  # original weights and original BN statistics never move


def test_indicator_needs_a_bn_after_the_first_patched_conv(info):
    class NoBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.bn(self.act(self.conv(x))).mean((2, 3)))

    net = PatchedNetwork(NoBN(), plan_patches(NoBN(), None, side="random", ratio=0.5).specs)
    with pytest.raises(DeepPatchError, match="does not feed a BatchNorm directly"):
        net.locate_indicator(torch.rand(2, 1, 8, 8))


def test_indicator_is_located_by_execution_not_registration(info):
    base = create_model("resnet20", info)
    net = PatchedNetwork(base, plan_patches(base, None, side="random").specs)
    assert net.locate_indicator(torch.rand(2, *info.image_shape)) == ("conv1", "bn1")


def test_learned_gate_features_are_mean_std_max():
    """The gate's pooled features: per-channel mean, unbiased std and max of its conv block's output."""
    torch.manual_seed(0)
    gate = LearnedGate(4, width=6).eval()
    a = torch.rand(5, 4, 7, 7)
    with torch.no_grad():
        h = torch.relu(gate.bn(gate.conv(a))).flatten(2).double()
        feats = torch.cat([h.mean(2), h.std(2), h.amax(2)], 1).float()
        assert torch.allclose(gate.logit(a), gate.head(feats).squeeze(1), atol=1e-6)

def test_reference_gate_derives_its_direction_from_data():
    gate = ReferenceGate([0])
    info = gate.calibrate(torch.tensor([0.4, 0.5]), torch.tensor([0.1, 0.2]))
    assert info["direction"] == "perturbed if d < tau" and float(gate.tau) == pytest.approx(0.3)
    gate.calibrate(torch.tensor([0.1, 0.2]), torch.tensor([0.4, 0.5]))
    assert float(gate.direction) == 1.0
    with pytest.raises(DeepPatchError, match="cannot tell clean from perturbed"):
        gate.calibrate(torch.tensor([0.3, 0.3]), torch.tensor([0.3, 0.3001]))


def test_auroc_and_threshold_against_references():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    neg = torch.randn(200, generator=g).round(decimals=1)
    pos = (torch.randn(300, generator=g) + 1).round(decimals=1)
    expected = roc_auc_score([0] * 200 + [1] * 300, torch.cat([neg, pos]).numpy())
    assert auroc(neg, pos) == pytest.approx(expected, abs=1e-12)
    cut, bal = best_threshold(neg, pos)
    naive = max(0.5 * ((neg <= t).float().mean() + (pos > t).float().mean()).item()
                for t in torch.cat([neg, pos]).unique())
    assert bal == pytest.approx(naive)
    assert 0.5 * ((neg <= cut).float().mean() + (pos > cut).float().mean()).item() == pytest.approx(bal)


def test_switched_model_checkpoint_round_trip(tmp_path, info):
    base, model, (conv, bn) = _switched("resnet20", info, unit="crtunit")
    extra = {"specs": [s.to_dict() for s in model.patched.specs], "indicator": {"conv": conv, "bn": bn},
             "learned_gate": {"in_channels": model.learned_gate.in_channels, "width": 4, "stride": 1},
             "gate": "learned", "routing": "per-sample"}
    path = save_model(tmp_path / "dp.pt", model, arch="resnet20", info=info, kind="deeppatch", extra=extra)
    loaded = load_model(path, restorers=checkpoint_restorers()).model
    assert isinstance(loaded, SwitchedModel)
    assert isinstance(loaded.patched.net.get_submodule("bn1"), DualBN)
    x = torch.rand(8, *info.image_shape)
    with torch.inference_mode():
        for mode in ("original", "patched", "switch"):
            assert torch.equal(loaded.configure(mode=mode)(x), model.configure(mode=mode)(x)), mode


def test_switch_rows_from_one_pass_equal_running_each_variant(info):
    """DeepPatch's variant rows come from one pass (each path's predictions and each gate's decisions);
    they must be what running the switched model in each configuration gives."""
    from deeppatch.evaluation import perturbation_report
    from deeppatch.perturbations import get_perturbation
    from deeppatch.technique.diagnostics import gate_probe, switch_rows
    from deeppatch.technique.gating import path_pass

    splits = load_splits("digits", val_fraction=0.1)
    _, model, _ = _switched("tinycnn", info)
    test = splits.test.head(150)
    family = get_perturbation("blur")
    cpu = torch.device("cpu")
    with torch.inference_mode():
        x = torch.cat([family.apply(test.x.float() / 255, i) for i in range(len(family.conditions))])
        _route_half(model, x)  # a threshold in the middle: both paths are taken, batches split
    passes = path_pass(model, test, family, cpu, 32, probe=gate_probe(model))
    rows = {r.condition: r.value for r in switch_rows(model, family, passes, 32)}
    variants = [("switch=off (always patched)", {"mode": "patched"})] + [
        (f"{routing}/{gate}", {"mode": "switch", "gate": gate, "routing": routing})
        for gate in ("reference", "learned") for routing in ("per-sample", "batch-majority")]
    for label, config in variants:
        model.configure(**config)
        expected = perturbation_report(model, test, family, batch_size=32, device=cpu)
        for key in ("clean", "blur_mean", "union"):
            assert rows[f"test/{label}/{key}"] == pytest.approx(expected[key], abs=1e-9), (label, key)
    model.configure(mode="switch", gate="learned", routing="per-sample")
    assert 0 < rows["test/learned/sigma=1.5 routed patched"] < 100
