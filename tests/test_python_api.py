"""The Python API (`import deeppatch as dp`): the example of docs/python-api.md runs as written (on
digits with tiny budgets), and a hand-written model that is not in the zoo can be repaired."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import deeppatch as dp
from deeppatch.errors import DeepPatchError

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def doc_example() -> str:
    """The first Python block of docs/python-api.md, shrunk to digits and one-epoch budgets."""
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert 'dp.load_data("fashion_mnist")' in block and "dp.report(" in block
    return (block.replace('"fashion_mnist"', '"digits"').replace('"smallcnn"', '"tinycnn"')
            .replace('"reports/mine"', "REPORT_DIR"))


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    code = re.sub(r"epochs=\d+", "epochs=1", doc_example())
    code = code.replace('"deeppatch", perturbation="blur", epochs=1',
                        '"deeppatch", perturbation="blur", epochs=1, gate_epochs=2')
    namespace = {"REPORT_DIR": str(tmp_path / "report")}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    table = namespace["table"]
    assert set(table["corrector"]) == {"original", "deeppatch", "finetune"}
    assert {"clean", "blur"} <= set(table["suite"])
    clean = table[(table.suite == "clean") & (table.condition == "clean")]
    assert len(clean) == 3 and clean["n"].nunique() == 1
    assert table.loc[table.corrector == "deeppatch", "repair_time_s"].iloc[0] > 0
    assert (table.suite == "diagnostics").any()  # DeepPatch's routing rows came through its hook
    assert table["model"].nunique() == 1  # every repair is reported under the model it repaired
    assert "original" in capsys.readouterr().out
    assert (tmp_path / "report" / "README.md").is_file() and (tmp_path / "report" / "index.html").is_file()
    # the unrepaired model is the report's reference row
    assert "original" in (tmp_path / "report" / "headline.csv").read_text()


class TwoLayerCNN(nn.Module):
    """Not a zoo model: hand-written, normalisation-free, two conv-BN-ReLU layers."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@pytest.fixture(scope="module")
def digits():
    return dp.load_data("digits", val_fraction=0.1)


def test_a_hand_written_model_is_repaired_and_evaluated(digits):
    torch.manual_seed(0)
    mine = dp.load_model(TwoLayerCNN(), digits)
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    fixed = dp.repair(mine, digits, "deeppatch", epochs=1, train_subset=200, gate_epochs=2, show_progress=False)
    tuned = dp.repair(mine, digits, dp.get_corrector("finetune", lr=0.01), epochs=1, train_subset=200)
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())
    assert fixed.repair_info["corrector"] == "deeppatch" and fixed.repair_info["cost"]["added_params"] > 0
    table = dp.evaluate({"mine": mine, "deeppatch": fixed, "finetune": tuned}, digits, suites={"clean": {}},
                        n_eval=100)
    values = table[table.suite == "clean"].set_index("corrector")["value"]
    assert set(values.index) == {"mine", "deeppatch", "finetune"} and values.between(0, 100).all()
    assert set(table.loc[table.suite == "clean", "n"]) == {100}


def test_errors_are_one_line_and_name_the_choices(digits):
    model = dp.load_model(TwoLayerCNN(), digits)
    with pytest.raises(DeepPatchError, match="unknown corrector 'finetun'; valid choices: .*finetune"):
        dp.repair(model, digits, "finetun")
    with pytest.raises(DeepPatchError, match="unknown suite 'blurr'"):
        dp.evaluate(model, digits, suites=["blurr"])
    with pytest.raises(DeepPatchError, match=r"expected \(batch, 10\) logits"):
        dp.load_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), digits)
    with pytest.raises(DeepPatchError, match="cannot take digits's images"):
        dp.load_model(nn.Linear(5, 10), digits)
    with pytest.raises(DeepPatchError, match="unknown model 'resnet2'"):
        dp.train("resnet2", digits)
    with pytest.raises(DeepPatchError, match="unknown data set|unknown dataset"):
        dp.load_data("digitz")
