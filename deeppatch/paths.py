"""Where each stage reads and writes under --output_dir (default ``output/``).

    <output_dir>/<dataset>/<model>/
        model_pretrain.pt            pretrained or trained-from-scratch model (self-describing)
        pretrain.state.pt            training state for --resume
        pretrain_metrics.json
        susp_filters_<method>.json   blame ranking (assess)
        model_<tag>.pt               repaired model (correct), e.g. model_patch_perfloss_replace.pt
        <tag>.state.pt               its training state
        eval_<tag>.json              evaluation report
"""

from __future__ import annotations

from pathlib import Path


def run_dir(output_dir: str | Path, dataset: str, model: str) -> Path:
    safe_model = model.replace(":", "__").replace("/", "_")
    return Path(output_dir) / dataset / safe_model


def pretrained_path(output_dir: str | Path, dataset: str, model: str) -> Path:
    return run_dir(output_dir, dataset, model) / "model_pretrain.pt"
