from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from deeppatch.data import TensorSplit, load_splits, stratified_subset
from deeppatch.errors import DeepPatchError
from deeppatch.formats import read_cifar_batch, read_idx
from tests.upstream_formats import (
    make_tar_gz,
    md5,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_idx,
)


@pytest.fixture
def no_system_fmnist(monkeypatch):
    """Hide the Debian copy so tests see only the files they wrote."""
    from deeppatch.data import get_dataset_source

    cls = type(get_dataset_source("fashion_mnist"))
    monkeypatch.setattr(cls, "system_dirs", ())
    return cls


def test_fashion_mnist_reads_idx_gz_from_data_dir(tmp_path, no_system_fmnist):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", n_train=200, n_test=50)
    splits = load_splits("fashion_mnist", tmp_path, val_fraction=0.1)
    assert splits.info.image_shape == (1, 28, 28)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (180, 20, 50)
    assert splits.train.x.dtype == torch.uint8
    # the val split is stratified: 2 images of each of the 10 classes
    assert torch.bincount(splits.val.y).tolist() == [2] * 10


def test_fashion_mnist_plain_idx_and_split_is_deterministic(tmp_path, no_system_fmnist):
    write_fashion_mnist(tmp_path, compress=False)
    a = load_splits("fashion_mnist", tmp_path, val_fraction=0.1)
    b = load_splits("fashion_mnist", tmp_path, val_fraction=0.1)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    c = load_splits("fashion_mnist", tmp_path, val_fraction=0.1, split_seed=7)
    assert not torch.equal(a.val.x, c.val.x)


def test_fashion_mnist_missing_offline_says_how_to_get_it(tmp_path, no_system_fmnist):
    with pytest.raises(DeepPatchError, match="apt-get install -y dataset-fashion-mnist"):
        load_splits("fashion_mnist", tmp_path)


def test_fashion_mnist_download_uses_torchvision(tmp_path, no_system_fmnist, monkeypatch, http_mirror):
    """The real torchvision download code, fed from a local mirror in the upstream format."""
    from torchvision.datasets import FashionMNIST as TV

    mirror = write_fashion_mnist(tmp_path / "mirror")
    resources = [(p.name, md5(p)) for p in sorted(mirror.iterdir())]
    monkeypatch.setattr(TV, "mirrors", [http_mirror(mirror)])
    monkeypatch.setattr(TV, "resources", resources)
    splits = load_splits("fashion_mnist", tmp_path / "data", download=True, val_fraction=0.1)
    assert len(splits.test) == 50
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_truncated_idx_is_a_clear_error(tmp_path):
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28)), compress=False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DeepPatchError, match="truncated"):
        read_idx(p)


def test_cifar10_python_batches(tmp_path):
    write_cifar10(tmp_path, n_per_batch=50)
    splits = load_splits("cifar10", tmp_path, val_fraction=0.1)
    assert splits.info.mean == (0.4914, 0.4822, 0.4465)
    assert splits.info.std == (0.2023, 0.1994, 0.201)
    assert len(splits.train) + len(splits.val) == 250 and len(splits.test) == 50
    assert splits.test.x.shape[1:] == (3, 32, 32)
    # pixels survive the round trip in CHW order
    raw = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert torch.equal(splits.test.x[3], torch.from_numpy(raw["data"][3].reshape(3, 32, 32)))


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path, n=300)
    splits = load_splits("cifar100", tmp_path, val_fraction=1 / 3)
    assert splits.info.num_classes == 100 and splits.info.mean == (0.507, 0.4865, 0.4409)
    assert int(splits.test.y.max()) == 99


def test_cifar10_download_through_torchvision(tmp_path, monkeypatch, http_mirror):
    from torchvision.datasets import CIFAR10 as TV

    src = write_cifar10(tmp_path / "src", n_per_batch=20)
    archive = make_tar_gz(src, tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setattr(TV, "url", http_mirror(tmp_path) + archive.name)
    monkeypatch.setattr(TV, "tgz_md5", md5(archive))
    monkeypatch.setattr(TV, "train_list", [[f"data_batch_{i}", md5(src / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(TV, "test_list", [["test_batch", md5(src / "test_batch")]])
    monkeypatch.setattr(TV, "meta", {"filename": "batches.meta", "key": "label_names",
                                     "md5": md5(src / "batches.meta")})
    splits = load_splits("cifar10", tmp_path / "data", download=True, val_fraction=0.1)
    assert len(splits.test) == 20


def test_cifar_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DeepPatchError, match="--download"):
        load_splits("cifar10", tmp_path)


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DeepPatchError, match="refusing"):
        read_cifar_batch(p)


def test_digits_and_unknown_name():
    splits = load_splits("digits")
    assert splits.info.image_shape == (1, 8, 8)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    with pytest.raises(DeepPatchError, match="valid choices: cifar10, cifar100, digits, fashion_mnist"):
        load_splits("mnist")


def test_batches_are_float_in_unit_range_and_seeded():
    split = TensorSplit(torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8), torch.arange(10))
    xs = [x for x, _ in split.batches(4)]
    assert xs[0].dtype == torch.float32 and float(xs[0].max()) <= 1.0 and len(xs) == 3

    def order(seed):
        return torch.cat([y for _, y in split.batches(4, shuffle=True, generator=torch.Generator().manual_seed(seed))])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))


def test_stratified_subset_balances_classes():
    split = TensorSplit(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100) % 5)
    sub = stratified_subset(split, 20, seed=0)
    assert torch.bincount(sub.y).tolist() == [4] * 5
