"""Fashion-MNIST (Xiao et al. 2017): 60k/10k grey 28x28 images, the embedded default data set.

Found without network in, in order: ``--data_dir`` (``<dir>``, ``<dir>/FashionMNIST/raw``,
``<dir>/fashion-mnist``), then where Debian's ``dataset-fashion-mnist`` package installs it
(``/usr/share/datasets/fashion-mnist``). With ``--download`` torchvision fetches it into
``<data_dir>/FashionMNIST/raw``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from deeppatch.data import DatasetSource
from deeppatch.errors import DeepPatchError
from deeppatch.formats import read_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


class FashionMNIST(DatasetSource):
    name = "fashion_mnist"
    description = "Fashion-MNIST, 10 classes, 1x28x28 (embedded default; Debian dataset-fashion-mnist)"
    train_size = 60000
    num_classes = 10
    image_shape = (1, 28, 28)
    mean = (0.2860,)
    std = (0.3530,)
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
    default_epochs = 8  # resnet20: >= 90 % clean test accuracy; smallcnn: about 91 %
    system_dirs: tuple[Path, ...] = (DEBIAN_DIR,)

    def candidate_dirs(self, root: Path) -> list[Path]:
        return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist", *self.system_dirs]

    def locate(self, root: Path, train: bool) -> tuple[Path, Path] | None:
        img_stem, lbl_stem = FILES[train]
        for folder in self.candidate_dirs(root):
            img, lbl = _find(folder, img_stem), _find(folder, lbl_stem)
            if img and lbl:
                return img, lbl
        return None

    def download(self, root: Path) -> None:
        from torchvision.datasets import FashionMNIST as TVFashionMNIST

        try:
            TVFashionMNIST(str(root), train=True, download=True)
        except Exception as exc:  # URLError, md5 mismatch, ...
            raise DeepPatchError(f"downloading Fashion-MNIST into {str(root)!r} failed: {exc}") from exc

    def load(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        found = self.locate(root, train)
        if found is None and download:
            self.download(root)
            found = self.locate(root, train)
        if found is None:
            searched = ", ".join(str(d) for d in self.candidate_dirs(root))
            raise DeepPatchError(
                f"Fashion-MNIST not found (searched {searched}); install it with "
                "'apt-get install -y dataset-fashion-mnist', or pass --download to fetch it"
            )
        img_path, lbl_path = found
        images = read_idx(img_path)
        labels = read_idx(lbl_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DeepPatchError(f"{img_path} / {lbl_path}: unexpected shapes {images.shape}, {labels.shape}")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64"))
