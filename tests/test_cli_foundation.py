from __future__ import annotations

import json
import os

import pytest

from deeppatch.cli import main


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_models_and_datasets(capsys):
    code, out, _ = run(["list", "models"], capsys)
    assert code == 0 and "resnet32" in out and "shufflenetv2_x1_0" in out
    code, out, _ = run(["list", "datasets"], capsys)
    assert code == 0 and "fashion_mnist" in out and "digits" in out


def test_pretrain_trains_from_scratch_and_writes_checkpoint_and_metrics(tmp_path, capsys):
    args = ["pretrain", "-m", "tinycnn", "-d", "digits", "-e", "2", "--output_dir", str(tmp_path), "--lr", "0.05",
            "--val_fraction", "0.1", "--device", "cpu"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    folder = tmp_path / "digits" / "tinycnn"
    metrics = json.loads((folder / "pretrain_metrics.json").read_text())
    assert metrics["source"] == "scratch" and metrics["training"]["epochs_run"] == 2
    assert set(metrics["test"]) == {"clean", "sigma=0.5", "sigma=1", "sigma=1.5", "sigma=2", "sigma=2.5",
                                    "sigma=3", "blur_mean", "union"}
    assert (folder / "model_pretrain.pt").is_file() and not (folder / "pretrain.state.pt").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # -r with a finished checkpoint only re-evaluates, with the same numbers
    code, _, _ = run(args + ["-r"], capsys)
    again = json.loads((folder / "pretrain_metrics.json").read_text())
    assert code == 0 and again["source"] == "existing checkpoint" and again["test"] == metrics["test"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "-m", "resnet99"], "unknown model 'resnet99'; valid choices:"),
        (["pretrain", "-m", "tinycnn", "-d", "mnist"], "unknown data set 'mnist'; valid choices:"),
        (["pretrain", "-m", "tinycnn", "-d", "digits", "--device", "tpu"], "unknown device 'tpu'"),
        (["pretrain", "-m", "tinycnn", "-d", "digits", "--lr", "-1"], "--lr must be positive"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path):
    code, _, err = run(argv + ["--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_cuda_without_gpu(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, _, err = run(["pretrain", "-m", "tinycnn", "-d", "digits", "--device", "cuda", "--output_dir",
                        str(tmp_path)], capsys)
    assert code == 2 and "no CUDA GPU" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(["pretrain", "-m", "tinycnn", "-d", "digits", "--output_dir", str(locked)], capsys)
    assert code == 2 and "not writable" in err or "cannot create" in err


def test_output_path_that_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["pretrain", "-m", "tinycnn", "-d", "digits", "--output_dir", str(blocker)], capsys)
    assert code == 2 and "cannot create output folder" in err


def test_checkpoint_for_another_architecture(capsys, tmp_path):
    base = ["-d", "digits", "-e", "1", "--output_dir", str(tmp_path), "--val_fraction", "0.1", "--device", "cpu"]
    assert run(["pretrain", "-m", "tinycnn", *base], capsys)[0] == 0
    src = tmp_path / "digits" / "tinycnn" / "model_pretrain.pt"
    dst = tmp_path / "digits" / "smallcnn" / "model_pretrain.pt"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes())
    code, _, err = run(["pretrain", "-m", "smallcnn", *base, "-r"], capsys)
    assert code == 2 and "holds architecture 'tinycnn'" in err


def test_truncated_checkpoint(capsys, tmp_path):
    base = ["-m", "tinycnn", "-d", "digits", "-e", "1", "--output_dir", str(tmp_path), "--val_fraction", "0.1"]
    assert run(["pretrain", *base], capsys)[0] == 0
    ckpt = tmp_path / "digits" / "tinycnn" / "model_pretrain.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    code, _, err = run(["pretrain", *base, "-r"], capsys)
    assert code == 2 and "corrupt, truncated" in err


def test_every_stage_has_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--help"])
    assert exc.value.code == 0
    assert "--data_dir" in capsys.readouterr().out
