"""perfloss-fo: the first-order estimate is the directional derivative it claims to be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deeppatch.data import load_splits
from deeppatch.errors import DeepPatchError
from deeppatch.perturbations import get_perturbation
from deeppatch.technique.blame import perfloss_data
from deeppatch.technique.blame_approx import FirstOrderBlameResult, perfloss_fo
from tests.models_util import seeded_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", val_fraction=0.1)


@pytest.fixture(scope="module")
def family():
    return get_perturbation("blur", sigmas=[0.5, 1.0])


def _mean_loss(model, data, layer=None, channel=None, scale=1.0):
    """Mean cross-entropy with channel `channel` of `layer`'s output multiplied by `scale`."""
    handle = None
    if layer is not None:
        def hook(_m, _i, out):
            out = out.clone()
            out[:, channel] *= scale
            return out

        handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return F.cross_entropy(model(data.x.double()), data.y, reduction="mean").item()
    finally:
        if handle is not None:
            handle.remove()


def test_scores_are_the_directional_derivative_towards_zeroing(digits, family):
    """d/dε L(a_c -> (1 - ε) a_c) at ε = 0, by central differences in float64."""
    model = seeded_model("tinycnn", digits.info).double()
    val = digits.val.head(40)
    data = perfloss_data(val, family, 0, CPU)
    result = perfloss_fo(model.float(), val, family, seed=0, device=CPU, batch_size=32)
    model = model.double()
    eps = 1e-4
    for layer, channels in (("features.0", (0, 3, 7)), ("features.4", (1, 9, 15))):
        for c in channels:
            plus = _mean_loss(model, data, layer, c, 1 - eps)
            minus = _mean_loss(model, data, layer, c, 1 + eps)
            derivative = (plus - minus) / (2 * eps)
            assert result.scores[layer][c] == pytest.approx(derivative, rel=1e-3, abs=1e-5), (layer, c)


def test_ranking_is_ascending_like_perfloss_and_runs_under_inference_mode(digits, family):
    model = seeded_model("resnet20", digits.info)
    val = digits.val.head(30)
    with torch.inference_mode():  # blame() runs under inference mode; the estimate re-enables autograd
        result = perfloss_fo(model, val, family, seed=0, device=CPU, batch_size=25,
                             layers=["conv1", "layer3.2.conv2"])
    assert result.method == "perfloss-fo" and result.n_images == 2 * len(val)
    assert set(result.scores) == {"conv1", "layer3.2.conv2"}
    assert len(result.scores["layer3.2.conv2"]) == 64
    ranking = result.ranking()["conv1"]
    assert ranking["score"] == sorted(ranking["score"])
    assert sorted(ranking["indices"]) == list(range(16))
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient was accumulated
    tie = FirstOrderBlameResult("perfloss-fo", 0.0, 1, {"c": [1.0, -2.0, 1.0, 0.0]}, "first-order", 0.0)
    assert tie.ranking()["c"] == {"score": [-2.0, 0.0, 1.0, 1.0], "indices": [1, 3, 0, 2]}
    assert tie.to_json()["direction"] == "ascending"


def test_frozen_models_deterministic_and_validation(digits, family):
    model = seeded_model("tinycnn", digits.info)
    for p in model.parameters():
        p.requires_grad_(False)
    a = perfloss_fo(model, digits.val, family, seed=1, device=CPU)
    b = perfloss_fo(model, digits.val, family, seed=1, device=CPU, batch_size=77)
    for layer in a.scores:
        assert a.scores[layer] == pytest.approx(b.scores[layer], rel=1e-9, abs=1e-12)
    assert any(abs(v) > 0 for v in a.scores["features.0"])
    with pytest.raises(DeepPatchError, match="not conv layers"):
        perfloss_fo(model, digits.val, family, seed=0, device=CPU, layers=["fc"])


def test_blame_dispatches_perfloss_fo_and_the_corrector_accepts_it(digits, family):
    """`blame(method="perfloss-fo")` is the first-order engine, under inference mode as assess runs it."""
    from deeppatch.technique.blame import METHODS, blame
    from deeppatch.technique.deeppatch_corrector import DeepPatchParams

    assert "perfloss-fo" in METHODS
    model = seeded_model("tinycnn", digits.info)
    val = digits.val.head(30)
    via_blame = blame(model, "perfloss-fo", val, family, seed=0, device=CPU, batch_size=16)
    direct = perfloss_fo(model, val, family, seed=0, device=CPU, batch_size=16)
    assert isinstance(via_blame, FirstOrderBlameResult)
    assert via_blame.scores == direct.scores and via_blame.ranking() == direct.ranking()
    assert DeepPatchParams(blame="perfloss-fo").blame == "perfloss-fo"
