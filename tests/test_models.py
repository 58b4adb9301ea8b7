from __future__ import annotations

import urllib.error

import pytest
import torch

from deeppatch.data import dataset_info
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model, model_names
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.models.pretrained import RELEASE_FILES, cached_path, load_pretrained, pretrained_url

ORIGINAL_README_MODELS = ["resnet32", "mobilenetv2_x0_5", "vgg13_bn", "shufflenetv2_x1_0"]
# parameter counts (millions) from chenyaofo/pytorch-cifar-models' README, CIFAR-10 heads
PUBLISHED_PARAMS = {"resnet20": 0.27, "resnet32": 0.47, "resnet44": 0.66, "resnet56": 0.86, "vgg11_bn": 9.76,
                    "vgg13_bn": 9.94, "vgg16_bn": 15.25, "vgg19_bn": 20.57, "mobilenetv2_x0_5": 0.70,
                    "mobilenetv2_x0_75": 1.37, "mobilenetv2_x1_0": 2.24, "mobilenetv2_x1_4": 4.33,
                    "shufflenetv2_x0_5": 0.35, "shufflenetv2_x1_0": 1.26, "shufflenetv2_x1_5": 2.49,
                    "shufflenetv2_x2_0": 5.37}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_cifar_zoo_matches_published_sizes_and_runs_on_grey_28px(name):
    model = create_model(name, dataset_info("cifar10"))
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PUBLISHED_PARAMS[name]) < 0.006, n
    grey = create_model(name, dataset_info("fashion_mnist")).eval()
    assert grey(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert create_model(name, dataset_info("cifar100"))(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_zoo_has_the_original_readme_names():
    assert set(ORIGINAL_README_MODELS) <= set(model_names())
    for ds in ("cifar10", "cifar100"):
        for m in PUBLISHED_PARAMS:
            assert (ds, m) in RELEASE_FILES


def test_normalisation_is_the_first_layer_and_not_in_the_state_dict():
    model = create_model("resnet20", dataset_info("cifar10"))
    assert next(iter(model.children())).__class__.__name__ == "InputNormalize"
    assert not any(k.startswith("normalize") for k in model.state_dict())


def test_pretrained_weights_load_strictly_from_the_hub_cache(torch_home):
    info = dataset_info("cifar10")
    reference = create_model("resnet20", info)
    path = cached_path("cifar10", "resnet20")
    assert path.name == "cifar10_resnet20-4118986f.pt"
    assert pretrained_url("cifar10", "resnet20") == (
        "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/cifar10_resnet20-4118986f.pt")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)  # what the release file holds: a plain state dict
    model = load_pretrained(create_model("resnet20", info), "cifar10", "resnet20", progress=False)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(model.eval()(x), reference.eval()(x))


def test_pretrained_offline_is_a_clear_error(torch_home, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DeepPatchError, match="--train-if-missing"):
        load_pretrained(create_model("vgg13_bn", dataset_info("cifar10")), "cifar10", "vgg13_bn")


def test_pretrained_for_unknown_pair():
    with pytest.raises(DeepPatchError, match="no pretrained weights"):
        pretrained_url("fashion_mnist", "resnet20")


def test_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    info = dataset_info("digits")
    model = create_model("tinycnn", info).eval()
    path = save_model(tmp_path / "m.pt", model, arch="tinycnn", info=info, meta={"note": "x"})
    loaded = load_model(path, expect_arch="tinycnn", expect_dataset="digits")
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded.model(x), model(x))
    assert loaded.info == info
    with pytest.raises(DeepPatchError, match="holds architecture 'tinycnn'"):
        load_model(path, expect_arch="resnet20")
    with pytest.raises(DeepPatchError, match="made for data set 'digits'"):
        load_model(path, expect_dataset="cifar10")


def test_truncated_and_foreign_checkpoints(tmp_path):
    info = dataset_info("digits")
    path = save_model(tmp_path / "m.pt", create_model("tinycnn", info), arch="tinycnn", info=info)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DeepPatchError, match="corrupt, truncated"):
        load_model(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(DeepPatchError, match="not a DeepPatch model checkpoint"):
        load_model(tmp_path / "foreign.pt")


class Payload:
    """Any class outside the weights-only allowlist."""


def test_unpickling_arbitrary_objects_is_refused(tmp_path):
    torch.save({"format": "deeppatch.model/1", "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DeepPatchError):
        load_model(tmp_path / "evil.pt")


def test_robustbench_imports_where_it_is_first_needed():
    """`import deeppatch` has no side effect on imports; `import_robustbench` installs the autoattack alias."""
    import subprocess
    import sys

    code = ("import sys, deeppatch, deeppatch.models.registry; assert 'autoattack' not in sys.modules; "
            "from deeppatch._robustbench_compat import import_robustbench; rb = import_robustbench(); "
            "from robustbench.utils import load_model; import autoattack, pyautoattack; "
            "assert autoattack is pyautoattack; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
