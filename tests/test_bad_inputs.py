"""Hostile input, one table: every case exits with status 2, prints exactly one line on stderr (no
traceback), and leaves nothing new on disk (neither under the work folder nor in the current one)."""

from __future__ import annotations

import os
import pickle
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deeppatch.cli import main
from deeppatch.data import get_dataset_source
from deeppatch.models import create_model
from deeppatch.models.checkpoint import save_model

COMMON = ["-m", "tinycnn", "-d", "digits", "--val_fraction", "0.1", "--device", "cpu"]

SPEC = """
name = "t"
seeds = [0]
device = "cpu"

[maintenance]
perturbation = "blur"
settings = {{ sigmas = [0.5, 1.0] }}

[[datasets]]
name = "digits"
val_fraction = 0.1
{extra_dataset}
[[models]]
name = "tinycnn"
epochs = 1
{extra_model}
[[correctors]]
name = "{corrector}"
{corrector_params}

[suites.{suite}]

[budget]
train_subset = {train_subset}
epochs = 1
"""


def spec_text(**changes: str) -> str:
    values = {"extra_dataset": "", "extra_model": "", "corrector": "finetune", "corrector_params": "",
              "suite": "clean", "train_subset": "200", **changes}
    return SPEC.format(**values)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > owned.txt",))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with a pretrained tinycnn and its blame ranking, hostile files and specs."""
    root = tmp_path_factory.mktemp("hostile")
    out = root / "out"
    assert main(["pretrain", *COMMON, "-e", "1", "--output_dir", str(out)]) == 0
    assert main(["assess", *COMMON, "-f", "perfloss", "--output_dir", str(out)]) == 0
    info = get_dataset_source("digits").info()
    torch.manual_seed(0)
    save_model(root / "smallcnn.pt", create_model("smallcnn", info), arch="smallcnn", info=info)
    five = replace(info, num_classes=5)
    save_model(root / "five.pt", create_model("tinycnn", five), arch="tinycnn", info=five)
    torch.save({"format": "deeppatch.model/1", "kind": "plain", "arch": "tinycnn", "dataset": {
        "name": "digits", "num_classes": 10, "image_shape": [1, 8, 8], "mean": [0.3], "std": [0.4]},
        "state_dict": create_model("smallcnn", info).state_dict(), "extra": {}, "meta": {}}, root / "wrongweights.pt")
    (root / "random.pt").write_bytes(os.urandom(4096))
    (root / "evil.pt").write_bytes(pickle.dumps({"format": "deeppatch.model/1", "x": Evil()}))
    (root / "empty.pt").write_bytes(b"")
    (root / "afolder").mkdir()
    specs = {
        "ok": spec_text(),
        "unknown_key": "colour = 'red'\n" + spec_text(),
        "escape": spec_text().replace('name = "t"', 'name = "../../escaped"'),
        "negative_seeds": spec_text().replace("seeds = [0]", "seeds = -2"),
        "repeated_seeds": spec_text().replace("seeds = [0]", "seeds = [1, 1]"),
        "dup_dataset": spec_text(extra_dataset='[[datasets]]\nname = "digits"\n'),
        "dup_model": spec_text(extra_model='[[models]]\nname = "tinycnn"\n'),
        "subset_large": spec_text(train_subset="5000"),
        "subset_small": spec_text(train_subset="5"),
        "bad_suite": spec_text(suite="cleanish"),
        "bad_corrector": spec_text(corrector="fine-tune"),
        "bad_param": spec_text(corrector_params="params = { lr = -1 }"),
        "bad_param_name": spec_text(corrector_params="params = { learning_rate = 0.1 }"),
        "bad_model": spec_text().replace('name = "tinycnn"', 'name = "tinycnnn"'),
        "bad_dataset": spec_text().replace('name = "digits"', 'name = "digitz"'),
        "bad_perturbation": spec_text().replace('perturbation = "blur"', 'perturbation = "blurr"'),
        "bad_device": spec_text().replace('device = "cpu"', 'device = "tpu"'),
        "not_toml": "name = [unclosed\n",
        "bad_leaderboard": spec_text() + "\n[leaderboard]\nclean_drop_tolerance = -1\n",
    }
    for name, text in specs.items():
        (root / f"{name}.toml").write_text(text)
    (root / "binary.toml").write_bytes(b"\xff\xfe\x00binary")
    # a results folder whose only rows file is malformed, for `deeppatch report`
    (root / "badrows" / "rows").mkdir(parents=True)
    (root / "badrows" / "rows" / "cell.jsonl").write_text('{"benchmark": "t"}\n')
    (root / "norows").mkdir()
    return root


def cases() -> list[tuple[str, list[str], str]]:
    """(id, argv with {w} for the work folder and {o} for its output folder, expected text in the one line)."""
    o = ["--output_dir", "{o}"]
    return [
        # the command line itself
        ("no-command", [], "COMMAND"),
        ("unknown-command", ["fly"], "invalid choice"),
        ("list-unknown", ["list", "nonsense"], "invalid choice: 'nonsense'"),
        ("batch-not-int", ["pretrain", *COMMON, "-b", "x", *o], "invalid int value: 'x'"),
        # pretrain
        ("unknown-model", ["pretrain", "-m", "resnet2", "-d", "digits", *o], "unknown model 'resnet2'"),
        ("unknown-dataset", ["pretrain", "-m", "tinycnn", "-d", "digitz", *o], "digitz"),
        ("batch-zero", ["pretrain", *COMMON, "-b", "0", *o], "-b/--batch_size must be positive, got 0"),
        ("lr-negative", ["pretrain", *COMMON, "--lr", "-1", *o], "--lr must be positive, got -1"),
        ("epochs-zero", ["pretrain", *COMMON, "-e", "0", *o], "-e/--max_epoch must be positive, got 0"),
        ("weights-unknown", ["pretrain", *COMMON, "--weights", "maybe", *o], "maybe"),
        ("device-unknown", ["pretrain", "-m", "tinycnn", "-d", "digits", "--device", "tpu", *o],
         "unknown device 'tpu'"),
        ("subset-zero", ["pretrain", *COMMON, "--train-subset", "0", *o], "--train-subset must be positive"),
        # assess: the model under maintenance and checkpoints
        ("no-pretrained", ["assess", *COMMON, "-f", "perfloss", "--output_dir", "{w}/empty_out"],
         "run 'deeppatch pretrain -m tinycnn -d digits --output_dir {w}/empty_out' first"),
        ("arch-mismatch", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/smallcnn.pt", *o],
         "holds architecture 'smallcnn', but -m tinycnn"),
        ("class-mismatch", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/five.pt", *o],
         "class count 5, but the data is 10"),
        ("random-bytes", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/random.pt", *o], "random.pt"),
        ("empty-checkpoint", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/empty.pt", *o], "empty.pt"),
        ("malicious-pickle", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/evil.pt", *o],
         "refusing to unpickle"),
        ("wrong-weights", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/wrongweights.pt", *o],
         "unexpected: features.8.weight"),
        ("missing-checkpoint", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/nothere.pt", *o],
         "nothere.pt"),
        ("folder-checkpoint", ["assess", *COMMON, "-f", "perfloss", "--checkpoint", "{w}/afolder", *o], "afolder"),
        ("blame-unknown", ["assess", *COMMON, "-f", "perfless", *o], "invalid choice: 'perfless'"),
        # correct
        ("ratio-too-big", ["correct", *COMMON, "--susp_ratio", "2", *o], "--susp_ratio must be <= 1.0, got 2.0"),
        ("ratio-negative", ["correct", *COMMON, "--susp_ratio", "-0.5", *o], "--susp_ratio must be >= 0.0"),
        ("crt-epoch-negative", ["correct", *COMMON, "--crt_epoch", "-1", *o], "--crt_epoch must be >= 0"),
        ("corrector-unknown", ["correct", *COMMON, "-c", "nonsense", *o], "unknown corrector 'nonsense'"),
        ("no-ranking", ["correct", *COMMON, "-f", "featswap", *o],
         "run 'deeppatch assess -m tinycnn -d digits --output_dir {o} -f featswap' first"),
        ("gate-epochs-negative", ["correct", *COMMON, "--gate_epochs", "-3", *o], "--gate_epochs must be >= 0"),
        # evaluate
        ("no-repaired", ["evaluate", *COMMON, "-c", "patch", *o], "no repaired model"),
        ("suite-typo", ["evaluate", *COMMON, "--suite", "blurr", *o], "--suite: unknown suite 'blurr'"),
        ("n-eval-zero", ["evaluate", *COMMON, "--n-eval", "0", *o], "--n-eval must be positive, got 0"),
        ("routing-family-unknown", ["evaluate", *COMMON, "--routing_family", "rain", *o], "rain"),
        ("evaluate-random", ["evaluate", *COMMON, "--checkpoint", "{w}/random.pt", *o], "random.pt"),
        ("evaluate-arch", ["evaluate", *COMMON, "--checkpoint", "{w}/smallcnn.pt", *o], "holds architecture"),
        # bench: the spec, before any work
        ("bench-folder", ["bench", "{w}/afolder"], "is a folder"),
        ("bench-missing", ["bench", "{w}/nothere.toml"], "not found"),
        ("bench-binary", ["bench", "{w}/binary.toml"], "not a text file"),
        ("bench-not-toml", ["bench", "{w}/not_toml.toml"], "not valid TOML"),
        ("bench-unknown-key", ["bench", "{w}/unknown_key.toml"], "unknown key 'colour'"),
        ("bench-escape", ["bench", "{w}/escape.toml"], "'../../escaped'"),
        ("bench-negative-seeds", ["bench", "{w}/negative_seeds.toml"], "got -2"),
        ("bench-repeated-seeds", ["bench", "{w}/repeated_seeds.toml"], "repeat a seed"),
        ("bench-dup-dataset", ["bench", "{w}/dup_dataset.toml"], "names 'digits' twice"),
        ("bench-dup-model", ["bench", "{w}/dup_model.toml"], "names 'tinycnn' twice"),
        ("bench-subset-large", ["bench", "{w}/subset_large.toml"], "train_subset = 5000 is larger"),
        ("bench-subset-small", ["bench", "{w}/subset_small.toml"], "too small to stratify"),
        ("bench-suite", ["bench", "{w}/bad_suite.toml"], "unknown suite 'cleanish'"),
        ("bench-corrector", ["bench", "{w}/bad_corrector.toml"], "unknown corrector 'fine-tune'"),
        ("bench-param", ["bench", "{w}/bad_param.toml"], "parameter 'lr' must be >= 0.0, got -1.0"),
        ("bench-param-name", ["bench", "{w}/bad_param_name.toml"], "unknown parameter(s) learning_rate"),
        ("bench-model", ["bench", "{w}/bad_model.toml"], "unknown model 'tinycnnn'"),
        ("bench-dataset", ["bench", "{w}/bad_dataset.toml"], "digitz"),
        ("bench-perturbation", ["bench", "{w}/bad_perturbation.toml"], "blurr"),
        ("bench-device", ["bench", "{w}/bad_device.toml"], "unknown device 'tpu'"),
        ("bench-leaderboard", ["bench", "{w}/bad_leaderboard.toml"], "clean_drop_tolerance must be a number >= 0"),
        ("bench-only", ["bench", "{w}/ok.toml", "--only", "colour=red", "--results", "{w}/r"], "colour=red"),
        ("bench-only-none", ["bench", "{w}/ok.toml", "--only", "corrector=none", "--results", "{w}/r"],
         "selects no cell"),
        ("bench-rerun-none", ["bench", "{w}/ok.toml", "--rerun", "corrector=apricot", "--results", "{w}/r"],
         "--rerun corrector=apricot selects no cell"),
        ("bench-same-folders", ["bench", "{w}/ok.toml", "--results", "{w}/same", "--report-dir", "{w}/same"],
         "must be separate folders"),
        ("bench-nested-folders", ["bench", "{w}/ok.toml", "--results", "{w}/rr", "--report-dir", "{w}/rr/report"],
         "must be separate folders"),
        ("bench-device-flag", ["bench", "{w}/ok.toml", "--device", "tpu", "--results", "{w}/r"], "unknown device"),
        # report
        ("report-missing", ["report", "{w}/nothere", "-o", "{w}/rep"], "nothere"),
        ("report-no-rows", ["report", "{w}/norows", "-o", "{w}/rep"], "no result rows"),
        ("report-bad-rows", ["report", "{w}/badrows", "-o", "{w}/rep"], "cell.jsonl:1: missing column"),
    ]


def snapshot(*folders: Path) -> set[tuple[str, int]]:
    return {(str(p), p.stat().st_size if p.is_file() else -1) for f in folders for p in f.rglob("*")
            if "__pycache__" not in p.parts}


@pytest.mark.parametrize(("argv", "expected"), [(c[1], c[2]) for c in cases()], ids=[c[0] for c in cases()])
def test_bad_input_is_one_clear_line_and_writes_nothing(argv, expected, work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPPATCH_PROGRESS", "0")
    fill = {"{w}": str(work), "{o}": str(work / "out")}
    args = [a.replace("{w}", fill["{w}"]).replace("{o}", fill["{o}"]) for a in argv]
    expected = expected.replace("{w}", fill["{w}"]).replace("{o}", fill["{o}"])
    before = snapshot(work, tmp_path)
    assert exit_code(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert snapshot(work, tmp_path) == before, "something was written"
    assert not (tmp_path / "owned.txt").exists()


def exit_code(args: list[str]) -> int:
    """The status `deeppatch ARGS` exits with (argparse exits through SystemExit)."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_there_are_at_least_forty_cases():
    assert len(cases()) >= 40 and len({c[0] for c in cases()}) == len(cases())


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "nonsense"])
    assert info.value.code == 2


def test_spec_reading_does_not_execute_anything(tmp_path):
    """A spec is data: TOML only, no code runs while it is read."""
    (tmp_path / "s.toml").write_text(textwrap.dedent('''
        name = "__import__('os').system('touch pwned')"
    '''))
    assert main(["bench", str(tmp_path / "s.toml")]) == 2
    assert not (tmp_path / "pwned").exists()
