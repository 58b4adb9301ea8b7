from __future__ import annotations

import pytest
import torch

from deeppatch.data import load_splits
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import accuracy
from deeppatch.models import create_model
from deeppatch.seeding import make_generator
from deeppatch.training import OptimConfig, TrainLoop


class Interrupt(Exception):
    pass


def _loop(tmp_path, model, splits, *, epochs=3, resume=False, stop_at=None, validate=True, **kw):
    train = splits.train

    def batches(epoch):
        if stop_at is not None and epoch == stop_at:
            raise Interrupt
        return train.batches(64, shuffle=True, generator=make_generator(0, "order", epoch))

    return TrainLoop(
        model=model, params=list(model.parameters()), batches=batches, num_batches=train.num_batches(64),
        epochs=epochs, optim=OptimConfig(lr=0.05), validate=(lambda m: accuracy(m, splits.val)) if validate else None,
        select="best" if validate else "last", checkpoint_path=tmp_path / "run.state.pt", resume=resume, seed=0, **kw,
    )


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", val_fraction=0.1)


def test_killed_run_resumes_to_the_same_weights(tmp_path, digits):
    torch.manual_seed(0)
    a = create_model("tinycnn", digits.info)
    b = create_model("tinycnn", digits.info)
    b.load_state_dict(a.state_dict())
    result_a = _loop(tmp_path / "a", a, digits).run()
    with pytest.raises(Interrupt):
        _loop(tmp_path / "b", b, digits, stop_at=2).run()
    fresh = create_model("tinycnn", digits.info)  # the process died: resume into a new model
    result_b = _loop(tmp_path / "b", fresh, digits, resume=True).run()
    assert result_b.resumed_from == 2
    for (k, va), vb in zip(a.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    timing = {"seconds", "images_per_s"}
    strip = lambda hist: [{k: v for k, v in h.items() if k not in timing} for h in hist]  # noqa: E731
    assert strip(result_a.history) == strip(result_b.history)
    assert result_a.best_epoch == result_b.best_epoch


def test_best_epoch_is_kept_and_start_score_compared(tmp_path, digits):
    torch.manual_seed(1)
    model = create_model("tinycnn", digits.info)
    result = _loop(tmp_path, model, digits, epochs=4).run()
    assert result.kept == "best"
    assert result.best_score == max(h["val"] for h in result.history)
    assert accuracy(model, digits.val) == pytest.approx(result.best_score)
    assert result.best_score > result.start_score


def test_last_epoch_kept_when_no_epoch_beats_the_start(tmp_path, digits):
    torch.manual_seed(2)
    model = create_model("tinycnn", digits.info)
    loop = _loop(tmp_path, model, digits, epochs=2)
    scores = iter([50.0, 40.0, 30.0])  # start, epoch 1, epoch 2: never better than the start
    loop.validate = lambda m: next(scores)
    out = loop.run()
    assert out.kept.startswith("last") and out.best_epoch is None
    assert (tmp_path / "run.state.pt").is_file()


def test_bad_settings_are_rejected(tmp_path, digits):
    model = create_model("tinycnn", digits.info)
    with pytest.raises(DeepPatchError, match="learning rate"):
        TrainLoop(model=model, params=list(model.parameters()), batches=lambda e: [], num_batches=0, epochs=1,
                  optim=OptimConfig(lr=-1), select="last").run()
    with pytest.raises(DeepPatchError, match="no trainable parameters"):
        TrainLoop(model=model, params=[], batches=lambda e: [], num_batches=0, epochs=1, select="last").run()


def test_resume_with_other_epoch_count_is_refused(tmp_path, digits):
    model = create_model("tinycnn", digits.info)
    _loop(tmp_path, model, digits, epochs=1).run()
    with pytest.raises(DeepPatchError, match="written for 1 epochs"):
        _loop(tmp_path, model, digits, epochs=2, resume=True).run()


def test_defaults_need_no_validation_function(digits):
    """Without `validate` the default selection keeps the last epoch (it used to fail); with one, the best."""
    model = create_model("tinycnn", digits.info)
    train = digits.train.head(128)
    loop = TrainLoop(model=model, params=list(model.parameters()), num_batches=train.num_batches(64), epochs=1,
                     batches=lambda e: train.batches(64, shuffle=True, generator=make_generator(0, "o", e)))
    assert loop.select == "last" and loop.run().kept == "last"
    with_val = TrainLoop(model=model, params=list(model.parameters()), batches=lambda e: [], num_batches=0, epochs=0,
                         validate=lambda m: 0.0)
    assert with_val.select == "best"
