"""DeepPatch and DeepCorrect through the Corrector interface, end to end on tiny data."""

from __future__ import annotations

import pytest
import torch

from deeppatch.corrector import Budget, RepairTask, checkpoint_restorers, corrector_registry, get_corrector
from deeppatch.data import load_splits
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.perturbations import get_perturbation
from deeppatch.pretrain import PretrainConfig, train_from_scratch
from deeppatch.technique.patching import PatchedNetwork, added_parameters
from deeppatch.technique.switch import SwitchedModel
from tests.models_util import run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    splits = load_splits("digits", val_fraction=0.1)
    model = create_model("tinycnn", splits.info)
    train_from_scratch(model, splits, PretrainConfig(model="tinycnn", dataset="digits"), CPU, None, 3)
    family = get_perturbation("blur", sigmas=[0.5, 1.0])
    return RepairTask(model.eval(), splits, family, budget=Budget(epochs=2), seed=1)


def _base_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_deeppatch_changes_only_the_patch_and_keeps_the_original_path(task, tmp_path):
    before = _base_state(task.model)
    repaired = run("deeppatch", task, **{"gate_epochs": 3, "ratio": 0.5})
    model = repaired.model
    assert isinstance(model, SwitchedModel) and repaired.kind == "deeppatch"
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())  # input untouched
    # the original weights and BN statistics inside the patched model are the model under maintenance's
    for name, bn in model.patched.dual_bns():
        assert torch.equal(bn.bn.running_mean, before[f"{name}.running_mean"])
        assert not torch.equal(bn.patched_mean, before[f"{name}.running_mean"])
    for name, conv in model.patched.patched_convs():
        assert torch.equal(conv.conv.weight, before[f"{name}.weight"])
    x = torch.rand(16, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(model.configure(mode="original")(x), task.model(x))
        model.configure(mode="switch")
    assert {r.metric for r in repaired.diagnostics} == {"routing_accuracy", "auroc"}
    assert repaired.cost.added_params > 0 and repaired.cost.epochs == 2
    # the runner counts as trainable what requires grad (the patch and the gate), and as added every number
    # stored beyond the original's: the patch, its BN statistics, the gates' parameters, statistics, thresholds
    gate = sum(p.numel() for p in model.learned_gate.parameters())
    gate_state = sum(b.numel() for g in (model.learned_gate, model.reference_gate) for b in g.buffers()
                     if b.is_floating_point())
    assert repaired.cost.added_params == added_parameters(model.patched) + gate + gate_state
    assert repaired.cost.trainable_params == sum(p.numel() for p in model.patched.patch_parameters()) + gate
    path = save_model(tmp_path / "dp.pt", model, arch="tinycnn", info=task.splits.info, kind=repaired.kind,
                      extra=repaired.extra)
    loaded = load_model(path, restorers=checkpoint_restorers()).model
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_deepcorrect_is_always_patched_and_restores(task, tmp_path):
    repaired = run("deepcorrect", task, **{"ratio": 0.5})
    net = repaired.model
    assert isinstance(net, PatchedNetwork) and repaired.kind == "deepcorrect"
    assert all(c.unit == "crtunit" for _, c in net.patched_convs())
    x = torch.rand(8, 1, 8, 8)
    with torch.inference_mode():
        assert not torch.allclose(net(x), task.model(x))
    path = save_model(tmp_path / "dc.pt", net, arch="tinycnn", info=task.splits.info, kind=repaired.kind,
                      extra=repaired.extra)
    with torch.inference_mode():
        assert torch.equal(load_model(path, restorers=checkpoint_restorers()).model(x), net(x))


def test_registry_lists_deeppatch_and_the_baselines():
    names = set(corrector_registry())
    assert {"deeppatch", "deepcorrect", "none", "finetune", "adversarial", "augmix", "deepgini", "robot",
            "apricot", "sensei"} <= names
    with pytest.raises(DeepPatchError, match="corrector 'deeppatch': parameter 'ratio' must be <= 1.0"):
        get_corrector("deeppatch", **{"ratio": 2})
    with pytest.raises(DeepPatchError, match="valid choices: per-sample, batch-majority"):
        get_corrector("deeppatch", **{"routing": "coin-flip"})
