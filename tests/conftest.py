"""Shared fixtures: tiny data, no network, no progress bars, deterministic threads."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from deeppatch.corrector import Budget, RepairTask
from deeppatch.data import Splits, load_splits
from deeppatch.models import create_model
from deeppatch.perturbations import get_perturbation
from deeppatch.seeding import make_generator
from deeppatch.storage import Workspace
from deeppatch.training import OptimConfig, TrainLoop

os.environ.setdefault("DEEPPATCH_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never reach the network: connections beyond loopback fail loudly."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in LOOPBACK:
            raise OSError(f"network access to {host!r} is disabled in tests")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def http_mirror():
    """Serve a local folder over HTTP on loopback, like an upstream download mirror."""
    import functools
    import http.server
    import threading

    servers = []

    def serve(folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    torch.hub.set_dir(str(home / "hub"))
    yield home
    torch.hub.set_dir(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub"))


# --------------------------------------------------------------------------------------------
# the baseline tests' setting (test_baseline*.py): tiny digits, a trained tinycnn, two blur sigmas


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the test machines are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", val_fraction=0.1)


@pytest.fixture(scope="module")
def pretrained(digits):
    """A tinycnn trained on clean digits (about 97 % test accuracy): the model under maintenance."""
    torch.manual_seed(0)
    model = create_model("tinycnn", digits.info)
    train = digits.train
    TrainLoop(model=model, params=list(model.parameters()), num_batches=train.num_batches(32), epochs=5,
              batches=lambda e: train.batches(32, shuffle=True, generator=make_generator(0, "pretrain", e)),
              optim=OptimConfig(lr=0.1, schedule="constant"), select="last", show_progress=False).run()
    return model.eval()


@pytest.fixture(scope="module")
def blur():
    return get_perturbation("blur", sigmas=[0.5, 1.0])


@pytest.fixture
def make_task(digits, pretrained, blur):
    def make(epochs=1, train_subset=100, seed=2021, splits=None, batch_size=None, work_dir=None, resume=False,
             family=None, model=None):
        return RepairTask(model=model or pretrained, splits=splits or digits, perturbation=family or blur, seed=seed,
                          budget=Budget(epochs=epochs, train_subset=train_subset, batch_size=batch_size),
                          workspace=Workspace(state_dir=work_dir, resume=resume))

    return make
