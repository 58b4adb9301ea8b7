"""RobustBench models offline: robustbench's own loader on files in its layout, and our checkpoints."""

from __future__ import annotations

import pytest
import torch

from deeppatch.data import dataset_info
from deeppatch.errors import DeepPatchError
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.models.robustbench_models import (
    checkpoint_location,
    create_robustbench_model,
    load_robustbench_model,
    parse_model_spec,
    robustbench_extra,
    robustbench_model_names,
)

# the smallest zoo entries we found: WRN-40-2 (2.2 M parameters) and WRN-28-4 (5.8 M, a Linf entry)
SMALL = [("Hendrycks2020AugMix_WRN", "corruptions"), ("Ding2020MMA", "Linf")]


@pytest.fixture(scope="module")
def augmix_wrn():
    torch.manual_seed(0)
    return create_robustbench_model("Hendrycks2020AugMix_WRN", "cifar10", "corruptions").eval()


@pytest.mark.parametrize(("name", "threat"), SMALL)
def test_checkpoint_in_robustbench_layout_loads_offline(tmp_path, name, threat):
    torch.manual_seed(1)
    reference = create_robustbench_model(name, "cifar10", threat).eval()
    path = tmp_path / "cifar10" / threat / f"{name}.pt"
    assert checkpoint_location(name, "cifar10", tmp_path, threat).files == (path,)
    path.parent.mkdir(parents=True)
    # robustbench strips a DataParallel 'module.' prefix; released checkpoints often carry one
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = load_robustbench_model(name, "cifar10", tmp_path, threat)  # the network is blocked in tests
    assert not model.training
    x = torch.rand(3, 3, 32, 32)  # RobustBench models take [0, 1] pixels, as ours do
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
        assert model(x).shape == (3, 10)


def test_missing_checkpoint_says_where_to_put_it(tmp_path):
    with pytest.raises(DeepPatchError, match=r"cifar10/Linf/Standard\.pt"):
        load_robustbench_model("Standard", "cifar10", tmp_path)


def test_download_failure_is_one_clear_error(tmp_path):
    with pytest.raises(DeepPatchError, match="could not fetch"):
        load_robustbench_model("Ding2020MMA", "cifar10", tmp_path, download=True)


def test_bad_names_and_data_sets():
    with pytest.raises(DeepPatchError, match="closest: Standard"):
        load_robustbench_model("Standrd", "cifar10", "models")
    with pytest.raises(DeepPatchError, match="valid choices: cifar10, cifar100"):
        load_robustbench_model("Standard", "fashion_mnist", "models")
    with pytest.raises(DeepPatchError, match="threat model"):
        load_robustbench_model("Standard", "cifar10", "models", threat_model="L7")
    assert "Rice2020Overfitting" in robustbench_model_names("cifar100", "linf")


def test_model_specs_and_ensemble_layout(tmp_path):
    assert parse_model_spec("robustbench:Standard") == ("Standard", "Linf")
    assert parse_model_spec("robustbench:l2/Standard") == ("Standard", "L2")
    assert parse_model_spec("robustbench:corruptions/Hendrycks2020AugMix_WRN") == ("Hendrycks2020AugMix_WRN",
                                                                                  "corruptions")
    with pytest.raises(DeepPatchError, match="empty"):
        parse_model_spec("robustbench:")
    files = checkpoint_location("Chen2020Adversarial", "cifar10", tmp_path).files
    assert [f.name for f in files] == [f"Chen2020Adversarial.pt_m{i}.pt" for i in range(3)]


def test_our_checkpoint_restores_without_robustbench_files(tmp_path, augmix_wrn):
    info = dataset_info("cifar10")
    path = save_model(tmp_path / "m.pt", augmix_wrn, arch="robustbench:Hendrycks2020AugMix_WRN", info=info,
                      kind="robustbench", extra=robustbench_extra("Hendrycks2020AugMix_WRN", "cifar10", "corruptions"))
    loaded = load_model(path, expect_dataset="cifar10")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), augmix_wrn(x))
    record = torch.load(path, weights_only=True)
    record["state_dict"].pop(next(iter(record["state_dict"])))
    torch.save(record, tmp_path / "broken.pt")
    with pytest.raises(DeepPatchError, match="do not fit"):
        load_model(tmp_path / "broken.pt")
    record["extra"] = {}
    torch.save(record, tmp_path / "anonymous.pt")
    with pytest.raises(DeepPatchError, match="robustbench_name"):
        load_model(tmp_path / "anonymous.pt")
