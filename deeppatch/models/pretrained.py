"""Pretrained CIFAR-10/100 weights of chenyaofo/pytorch-cifar-models (the original project's source).

Fetched with torch.hub's download-and-cache machinery (`load_state_dict_from_url`, cache under
``$TORCH_HOME/hub/checkpoints``, sha256 prefix checked on download) and loaded with
``strict=True`` and ``weights_only=True``.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
from torch import nn

from deeppatch.errors import DeepPatchError

RELEASE_URL = "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/"

# (data set, model) -> release asset path (tag/file name). The 8-hex suffix is the sha256 prefix.
RELEASE_FILES: dict[tuple[str, str], str] = {
    ("cifar10", "resnet20"): "resnet/cifar10_resnet20-4118986f.pt",
    ("cifar10", "resnet32"): "resnet/cifar10_resnet32-ef93fc4d.pt",
    ("cifar10", "resnet44"): "resnet/cifar10_resnet44-2a3cabcb.pt",
    ("cifar10", "resnet56"): "resnet/cifar10_resnet56-187c023a.pt",
    ("cifar10", "vgg11_bn"): "vgg/cifar10_vgg11_bn-eaeebf42.pt",
    ("cifar10", "vgg13_bn"): "vgg/cifar10_vgg13_bn-c01e4a43.pt",
    ("cifar10", "vgg16_bn"): "vgg/cifar10_vgg16_bn-6ee7ea24.pt",
    ("cifar10", "vgg19_bn"): "vgg/cifar10_vgg19_bn-57191229.pt",
    ("cifar10", "mobilenetv2_x0_5"): "mobilenetv2/cifar10_mobilenetv2_x0_5-ca14ced9.pt",
    ("cifar10", "mobilenetv2_x0_75"): "mobilenetv2/cifar10_mobilenetv2_x0_75-a53c314e.pt",
    ("cifar10", "mobilenetv2_x1_0"): "mobilenetv2/cifar10_mobilenetv2_x1_0-fe6a5b48.pt",
    ("cifar10", "mobilenetv2_x1_4"): "mobilenetv2/cifar10_mobilenetv2_x1_4-3bbbd6e2.pt",
    ("cifar10", "shufflenetv2_x0_5"): "shufflenetv2/cifar10_shufflenetv2_x0_5-1308b4e9.pt",
    ("cifar10", "shufflenetv2_x1_0"): "shufflenetv2/cifar10_shufflenetv2_x1_0-98807be3.pt",
    ("cifar10", "shufflenetv2_x1_5"): "shufflenetv2/cifar10_shufflenetv2_x1_5-296694dd.pt",
    ("cifar10", "shufflenetv2_x2_0"): "shufflenetv2/cifar10_shufflenetv2_x2_0-ec31611c.pt",
    ("cifar100", "resnet20"): "resnet/cifar100_resnet20-23dac2f1.pt",
    ("cifar100", "resnet32"): "resnet/cifar100_resnet32-84213ce6.pt",
    ("cifar100", "resnet44"): "resnet/cifar100_resnet44-ffe32858.pt",
    ("cifar100", "resnet56"): "resnet/cifar100_resnet56-f2eff4c8.pt",
    ("cifar100", "vgg11_bn"): "vgg/cifar100_vgg11_bn-57d0759e.pt",
    ("cifar100", "vgg13_bn"): "vgg/cifar100_vgg13_bn-5ebe5778.pt",
    ("cifar100", "vgg16_bn"): "vgg/cifar100_vgg16_bn-7d8c4031.pt",
    ("cifar100", "vgg19_bn"): "vgg/cifar100_vgg19_bn-b98f7bd7.pt",
    ("cifar100", "mobilenetv2_x0_5"): "mobilenetv2/cifar100_mobilenetv2_x0_5-9f915757.pt",
    ("cifar100", "mobilenetv2_x0_75"): "mobilenetv2/cifar100_mobilenetv2_x0_75-d7891e60.pt",
    ("cifar100", "mobilenetv2_x1_0"): "mobilenetv2/cifar100_mobilenetv2_x1_0-1311f9ff.pt",
    ("cifar100", "mobilenetv2_x1_4"): "mobilenetv2/cifar100_mobilenetv2_x1_4-8a269f5e.pt",
    ("cifar100", "shufflenetv2_x0_5"): "shufflenetv2/cifar100_shufflenetv2_x0_5-1977720f.pt",
    ("cifar100", "shufflenetv2_x1_0"): "shufflenetv2/cifar100_shufflenetv2_x1_0-9ae22beb.pt",
    ("cifar100", "shufflenetv2_x1_5"): "shufflenetv2/cifar100_shufflenetv2_x1_5-e2c85ad8.pt",
    ("cifar100", "shufflenetv2_x2_0"): "shufflenetv2/cifar100_shufflenetv2_x2_0-e7e584cd.pt",
}


def has_pretrained(dataset: str, model: str) -> bool:
    return (dataset, model) in RELEASE_FILES


def pretrained_url(dataset: str, model: str) -> str:
    try:
        return RELEASE_URL + RELEASE_FILES[(dataset, model)]
    except KeyError:
        have = sorted({m for d, m in RELEASE_FILES if d == dataset})
        raise DeepPatchError(
            f"no pretrained weights for model {model!r} on data set {dataset!r}; "
            f"pretrained models for {dataset!r}: {', '.join(have) or '(none: train from scratch)'}"
        ) from None


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(dataset: str, model: str) -> Path:
    return hub_checkpoint_dir() / os.path.basename(pretrained_url(dataset, model))


def load_pretrained(model: nn.Module, dataset: str, name: str, progress: bool = True) -> nn.Module:
    """Fill `model` with the release weights (downloading them once); strict name match."""
    url = pretrained_url(dataset, name)
    target = cached_path(dataset, name)
    try:
        state = torch.hub.load_state_dict_from_url(
            url, model_dir=str(target.parent), map_location="cpu", progress=progress,
            check_hash=True, weights_only=True,
        )
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        raise DeepPatchError(
            f"cannot download pretrained weights {url} ({exc}); offline, place the file at "
            f"{target} or pass --train-if-missing to train {name} from scratch"
        ) from exc
    except RuntimeError as exc:
        raise DeepPatchError(f"pretrained weights {target} are corrupt ({exc}); delete the file") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DeepPatchError(
            f"weights {target.name} do not fit model {name!r}: {str(exc).splitlines()[0]}"
        ) from exc
    return model
