"""The assess -> correct -> evaluate chain through the command line, on tiny data."""

from __future__ import annotations

import json

import pytest

from deeppatch.cli import main

COMMON = ["-m", "tinycnn", "-d", "digits", "--val_fraction", "0.1", "--device", "cpu"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("out")
    assert main(["pretrain", *COMMON, "-e", "3", "--output_dir", str(folder)]) == 0
    return folder


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_chain_and_outputs(out, capsys):
    args = [*COMMON, "--output_dir", str(out)]
    code, text, err = run(["assess", *args, "-f", "perfloss"], capsys)
    assert code == 0, err
    ranking = json.loads((out / "digits" / "tinycnn" / "susp_filters_perfloss.json").read_text())
    assert ranking["format"] == "deeppatch.blame/1" and set(ranking["layers"]) == {"features.0", "features.4"}
    code, text, err = run(["correct", *args, "-f", "perfloss", "-c", "patch", "--crt_type", "replace",
                           "--crt_epoch", "2", "--gate_epochs", "3", "--susp_ratio", "0.5"], capsys)
    assert code == 0, err
    ckpt = out / "digits" / "tinycnn" / "model_patch_perfloss_replace_r50.pt"
    assert ckpt.is_file() and "kept epoch" in text
    # -r finds the finished training state and does not train again
    code, text, _ = run(["correct", *args, "-f", "perfloss", "-c", "patch", "--crt_epoch", "2", "--gate_epochs", "3",
                         "--susp_ratio", "0.5", "-r"], capsys)
    assert code == 0
    code, text, err = run(["evaluate", *args, "-f", "perfloss", "-c", "patch", "--susp_ratio", "0.5",
                           "--routing_family", "blur"], capsys)
    assert code == 0, err
    for variant in ("original", "always patched (no switch)", "switch per-sample (learned gate)",
                    "switch batch-majority (reference gate)"):
        assert variant in text
    report = json.loads((out / "digits" / "tinycnn" / "eval_patch_perfloss.json").read_text())
    entry = report["results"]["model_patch_perfloss_replace_r50"]
    assert {"routing_test", "routing_unseen", "cost", "table"} <= set(entry)
    assert entry["table"]["original"]["clean"] == pytest.approx(
        entry["table"]["switch batch-majority (learned gate)"]["clean"], abs=5.0)


def test_finetune_through_the_corrector_interface(out, capsys):
    args = [*COMMON, "--output_dir", str(out)]
    code, text, err = run(["correct", *args, "-c", "finetune", "--crt_epoch", "1"], capsys)
    assert code == 0, err
    code, text, err = run(["evaluate", *args, "-c", "finetune"], capsys)
    assert code == 0 and "finetune" in text


def test_missing_inputs_are_clear(tmp_path, out, capsys):
    code, _, err = run(["assess", *COMMON, "-f", "perfloss", "--output_dir", str(tmp_path)], capsys)
    assert code == 2 and f"run 'deeppatch pretrain -m tinycnn -d digits --output_dir {tmp_path}' first" in err
    code, _, err = run(["correct", *COMMON, "-f", "featswap", "--output_dir", str(out)], capsys)
    assert code == 2 and f"run 'deeppatch assess -m tinycnn -d digits --output_dir {out} -f featswap' first" in err
    # asked for a repaired model that is not there: an error with the command that makes it
    code, _, err = run(["evaluate", *COMMON, "-f", "perfloss", "-c", "patch", "--crt_type", "crtunit",
                        "--output_dir", str(out)], capsys)
    assert code == 2 and "no repaired model" in err and f"--output_dir {out}" in err
    # no -c and no repaired model: the model under maintenance is evaluated, and labelled so
    code, text, err = run(["evaluate", *COMMON, "-f", "perfloss", "--crt_type", "crtunit", "--suite", "clean",
                           "--output_dir", str(out)], capsys)
    assert code == 0, err
    assert "model under maintenance" in text and "[repaired" not in text
    assert (out / "digits" / "tinycnn" / "eval_maintenance.json").is_file()
    code, _, err = run(["correct", *COMMON, "-c", "nonsense", "--output_dir", str(out)], capsys)
    assert code == 2 and "unknown corrector 'nonsense'" in err
