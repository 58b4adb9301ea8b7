"""The contract of every registered corrector (DeepPatch and DeepCorrect included), with the tiny
parameters each corrector class carries in `test_params`: the test split is never read, the model
under maintenance is not modified, the repaired model maps the same input shape to the same number
of classes, the same seed gives the same weights, and the runner (not the corrector) measures cost."""

from __future__ import annotations

import textwrap

import pytest
import torch

from deeppatch.cli import main
from deeppatch.corrector import Budget, Corrector, RepairTask, corrector_registry, get_corrector, run_repair
from deeppatch.data import Splits, load_splits, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.perturbations import get_perturbation
from deeppatch.pretrain import PretrainConfig, train_from_scratch
from tests.models_util import seeded_model

REGISTRY = sorted(corrector_registry())


class Untouchable:
    """Stands in for the test split: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"a corrector touched the test split (.{name})")

    def __len__(self):
        raise AssertionError("a corrector touched the test split (len)")


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", val_fraction=0.1)


@pytest.fixture(scope="module")
def base(digits):
    model = seeded_model("tinycnn", digits.info, seed=0)
    train_from_scratch(model, digits, PretrainConfig(model="tinycnn", dataset="digits", train_subset=400),
                       torch.device("cpu"), None, 2)
    return model.eval()


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_registry_holds_deeppatch_and_every_baseline():
    assert {"deeppatch", "deepcorrect", "none", "finetune", "adversarial", "augmix", "deepgini", "robot", "apricot",
            "sensei"} <= set(REGISTRY)


@pytest.mark.parametrize("name", REGISTRY)
def test_contract(name, digits, base):
    cls = corrector_registry()[name]
    assert cls.summary() and isinstance(cls.test_params, dict)
    before = state(base)
    splits = Splits(digits.info, digits.train, digits.val, Untouchable())
    task = RepairTask(model=base, splits=splits, perturbation=get_perturbation("blur", sigmas=[0.5, 1.0]), seed=3,
                      budget=Budget(epochs=1, train_subset=100))
    first, cost = run_repair(get_corrector(name, **cls.test_params), task)
    second, _ = run_repair(get_corrector(name, **cls.test_params), task)
    after = state(base)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), \
        f"{name} modified the model under maintenance"
    assert first.model is not base
    x = to_float(digits.val.x[:5])
    with torch.no_grad():
        out = first.model.eval()(x)
        assert out.shape == (5, digits.info.num_classes)
        assert torch.equal(out, second.model.eval()(x)), f"{name}: same seed, different outputs"
    assert cost.wall_time_s > 0 and cost.trainable_params >= 0 and cost.added_params >= 0
    assert all(row.suite == "diagnostics" for row in first.diagnostics)
    if name == "none":
        assert cost.trainable_params == 0 and cost.added_params == 0 and cost.epochs == 0


def test_a_bare_module_is_a_valid_return(digits, base):
    class Identity(Corrector):
        name = "identity-for-test"

        def repair(self, task):
            return task.copy_model()

    task = RepairTask(model=base, splits=digits, perturbation=get_perturbation("blur"))
    repaired, cost = run_repair(Identity(), task)
    assert isinstance(repaired.model, torch.nn.Module) and cost.epochs == 0 and repaired.kind == "plain"


def test_get_corrector_takes_keyword_params_and_names_the_valid_correctors():
    assert get_corrector("finetune", lr=0.01).params.lr == 0.01
    with pytest.raises(DeepPatchError, match="unknown corrector 'finetun'; valid choices: .*finetune"):
        get_corrector("finetun")


def test_a_plugin_without_docstring_is_listed_with_the_others(tmp_path, monkeypatch, capsys):
    (tmp_path / "bare.py").write_text(textwrap.dedent('''
        from deeppatch.corrector import Corrector, Repaired

        class Bare(Corrector):
            name = "bare"

            def repair(self, task):
                return Repaired(task.copy_model())
    '''))
    monkeypatch.setenv("DEEPPATCH_BASELINES_PATH", str(tmp_path))
    assert main(["list", "correctors"]) == 0
    listed = capsys.readouterr().out
    assert "bare" in listed and "(no description)" in listed
    assert all(name in listed for name in REGISTRY)  # every corrector after it still listed
