"""SENSEI, DeepCorrect and adversarial training do what their papers define, on tiny digits data.

8x8 digits, tinycnn, two blur sigmas, budgets of 1-2 epochs on 100-200 images: CPU seconds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import checkpoint_restorers, get_corrector
from deeppatch.data import TensorSplit, stratified_subset, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.perturbations import get_perturbation
from deeppatch.perturbations.base import Perturbation
from deeppatch.perturbations.spatial import GENES, apply_genes, evolve, search_space
from deeppatch.seeding import make_generator
from deeppatch.technique.patching import CorrectionUnit, PatchedNetwork
from tests.baseline_fixtures import plugin
from tests.models_util import run

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# SENSEI: the genetic search runs over the maintenance family's own parameters


def test_sensei_blur_genes_are_sigmas_and_the_trained_variant_is_the_worst_blur(make_task, blur):
    ss = plugin("sensei")
    task = make_task(train_subset=80)
    model, data = task.copy_model(), task.train_data()
    source = ss.SenseiBatches(task, model, data, ss.Params(popsize=4), batch_size=32)
    assert source.space.genes == ("sigma",)
    x = torch.cat([b for b, _ in source(0)])  # one generation, then the epoch's images
    pop = source.population
    assert pop.shape == (80, 4, 1) and set(pop.unique().tolist()) <= {0.0, 1.0}, "genes are not sigma indices"
    clean = to_float(data.x)
    blurred = torch.stack([blur.apply(clean, 0), blur.apply(clean, 1)])  # (sigma, N, C, H, W)
    with torch.no_grad():
        loss = torch.stack([F.cross_entropy(model(b), data.y, reduction="none") for b in blurred], 1)
    # fitness = loss: where both sigmas survive, the first (trained) one is the one the model is worse at
    both = (pop[:, :, 0] == 0).any(1) & (pop[:, :, 0] == 1).any(1)
    assert both.any()
    assert torch.equal(pop[both, 0, 0].long(), loss[both].argmax(1))
    # the images trained on: the family's blur of the chosen sigma (hard) or the clean image (robust)
    order = torch.randperm(len(data), generator=make_generator(task.seed, "sensei", "order", 0))
    chosen = pop[order, 0, 0].long()
    expected = torch.where(source.robust[order].view(-1, 1, 1, 1), clean[order], blurred[chosen, order])
    assert (~source.robust).any() and torch.allclose(x, expected)


def test_sensei_spatial_family_keeps_senseis_own_space_and_operators(make_task):
    ss = plugin("sensei")
    task = make_task(family=get_perturbation("spatial"), train_subset=30)
    data = task.train_data()
    source = ss.SenseiBatches(task, task.copy_model(), data, ss.Params(popsize=4), batch_size=32)
    assert source.space.genes == GENES
    parents = source.parents(0)
    lo, hi = search_space(8, 8).bounds()
    assert parents.shape == (30, 4, 7) and (parents >= lo).all() and (parents <= hi).all()
    # the same generation as the spatial module's SENSEI operators (same draws, same offspring)
    ours = ss.evolve(parents, source.space, make_generator(1, "g"), 0.4)
    theirs = evolve(parents, search_space(8, 8), make_generator(1, "g"), 0.4)
    assert torch.equal(ours, theirs)
    x = to_float(data.x[:5])
    assert torch.equal(source.space.apply(x, parents[:5, 0]), apply_genes(x, parents[:5, 0]))


def test_sensei_corruption_genes_are_type_and_severity(make_task):
    ss = plugin("sensei")
    family = get_perturbation("corruptions", corruptions=["contrast", "brightness", "pixelate"], severities=[1, 3])
    space = ss.gene_space(family, 8, 8)
    assert space.genes == ("corruption", "severity") and space.sizes == (3, 2)
    genes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    assert space.condition(genes).tolist() == [0, 3, 4]  # contrast/1, brightness/3, pixelate/1
    x = to_float(make_task().train_data().x[:3])
    out = space.apply(x, genes)
    for i, c in enumerate([0, 3, 4]):
        assert torch.equal(out[i:i + 1], family.apply(x[i:i + 1], c))
    pop = space.random((200, 6), make_generator(0, "r"))
    mutated = space.mutate(pop, make_generator(0, "m"))
    assert (mutated >= 0).all() and (mutated[..., 0] <= 2).all() and (mutated[..., 1] <= 1).all()
    changed = (mutated != pop).sum(-1)
    # SENSEI mutates half the genes: one of the two (a severity step can be clipped at an end)
    assert (changed <= 1).all() and changed.float().mean() > 0.6
    type_moved = mutated[..., 0] != pop[..., 0]
    assert type_moved.any() and (mutated[..., 1][type_moved] == pop[..., 1][type_moved]).all()
    out = run("sensei", make_task(family=family, train_subset=40), popsize=3)
    assert out.details["search_space"]["genes"] == ["corruption", "severity"]


class Invert(Perturbation):
    name = "invert"
    conditions = ("all",)

    def apply(self, x, condition, generator=None):
        return 1.0 - x


def test_sensei_unsupported_family_is_one_clear_error(make_task):
    with pytest.raises(DeepPatchError, match=r"'invert'.*supported: blur, corruptions, spatial") as info:
        run("sensei", make_task(family=Invert()), popsize=3)
    assert "\n" not in str(info.value)


def test_sensei_resumes_populations_of_its_own_space(make_task, tmp_path):
    ss = plugin("sensei")
    task = make_task(train_subset=40, work_dir=tmp_path)
    data, p = task.train_data(), ss.Params(popsize=3)
    first = ss.SenseiBatches(task, task.copy_model(), data, p, 64)
    first.search(0)
    survivors = first.population.clone()
    first.search(1)  # saved the parents of epoch 2: the survivors of epoch 1
    resumed = ss.SenseiBatches(make_task(train_subset=40, work_dir=tmp_path, resume=True), task.copy_model(),
                               data, p, 64)
    assert torch.equal(resumed.parents(1), survivors)
    other = ss.SenseiBatches(make_task(family=get_perturbation("spatial"), train_subset=40, work_dir=tmp_path,
                                       resume=True), task.copy_model(), data, p, 64)
    assert other.parents(1).shape == (40, 3, 7), "a blur population was resumed into the spatial space"


# --------------------------------------------------------------------------------------------
# DeepCorrect: correction priority, correction units on the top filters, only the units train


def one_filter_model(pretrained, digits, j: int) -> nn.Module:
    """The pretrained tinycnn whose classifier reads only filter j of the last conv (retrained on it):
    correcting any other filter of that conv cannot change a prediction, correcting j restores the
    clean features, so j has the highest correction priority there (and zeroing it costs the most, so
    a removal ranking like perfloss puts it last)."""
    model = create_model("tinycnn", digits.info)
    model.load_state_dict(pretrained.state_dict())
    model.eval()
    with torch.no_grad():
        feats = torch.flatten(model.pool(model.features(model.normalize(to_float(digits.train.x)))), 1)
    cols = slice(4 * j, 4 * j + 4)  # the 2x2 pooled grid of channel j
    head = nn.Linear(4, 10)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    torch.manual_seed(0)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(head(feats[:, cols]), digits.train.y).backward()
        opt.step()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:, cols] = head.weight
        model.fc.bias.copy_(head.bias)
    return model.eval()


def brute_force_priority(model, val: TensorSplit, family, seed: int) -> dict[str, torch.Tensor]:
    """The paper's tau_j = sum_i |e_ij - e_i| / e_i, one full forward pass per (level, filter)."""
    x, y = to_float(val.x), val.y
    out = {}
    for name in ("features.0", "features.4"):
        conv = model.get_submodule(name)
        captured: list[torch.Tensor] = []
        h = conv.register_forward_hook(lambda m, i, o, store=captured: store.append(o.clone()))
        with torch.no_grad():
            model(x)
        h.remove()
        clean_act = captured[0]
        tau = torch.zeros(conv.out_channels, dtype=torch.float64)
        for c in range(len(family.conditions)):
            xd = family.apply(x, c, make_generator(seed, "deepcorrect", "priority", c))
            with torch.no_grad():
                e = (model(xd).argmax(1) != y).double().mean()
            for ch in range(conv.out_channels):
                def swap(m, i, o, ch=ch, clean_act=clean_act):
                    o = o.clone()
                    o[:, ch] = clean_act[:, ch]
                    return o

                h = conv.register_forward_hook(swap)
                with torch.no_grad():
                    e_ch = (model(xd).argmax(1) != y).double().mean()
                h.remove()
                if e > 0:
                    tau[ch] += (e_ch - e).abs() / e
        out[name] = tau
    return out


def test_deepcorrect_ranks_by_the_papers_correction_priority(pretrained, digits, blur):
    dc = plugin("deepcorrect")
    j = 5
    model = one_filter_model(pretrained, digits, j)
    val = stratified_subset(digits.val, 100, 0)
    scores, info = dc.correction_priority(model, val, blur, seed=3, device=torch.device("cpu"))
    expected = brute_force_priority(model, val, blur, 3)
    for name, tau in expected.items():
        assert torch.allclose(torch.tensor(scores[name], dtype=torch.float64), tau), name
    last = torch.tensor(scores["features.4"])
    assert last[j] > 0 and (last[torch.arange(16) != j] == 0).all()
    assert dc.rank(scores)["features.4"]["indices"][0] == j
    assert info["images"] == 100 and len(info["base_error"]) == 2


def test_deepcorrect_trains_only_units_on_the_top_filters_and_restores(make_task, pretrained, digits, tmp_path):
    dc = plugin("deepcorrect")
    before = state(pretrained)
    out = run("deepcorrect", make_task(epochs=2, train_subset=200), rank_images=60)
    net = out.model
    assert isinstance(net, PatchedNetwork) and out.kind == "deepcorrect"
    assert all(torch.equal(before[k], v) for k, v in pretrained.state_dict().items())  # task.model untouched
    # which filters: the top floor(C x ratio) by correction priority, ratios 0.75, 0.75, (0.5 ...)
    val = stratified_subset(digits.val, 60, 2021)
    ranking = dc.rank(dc.correction_priority(pretrained, val, get_perturbation("blur", sigmas=[0.5, 1.0]),
                                             seed=2021, device=torch.device("cpu"))[0])
    specs = {s["layer"]: s["indices"] for s in out.extra["specs"]}
    assert specs == {"features.0": ranking["features.0"]["indices"][:6],
                     "features.4": ranking["features.4"]["indices"][:12]}
    # the paper's unit: 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1, width |S|, + identity
    for name, conv in net.patched_convs():
        assert isinstance(conv.cru, CorrectionUnit)
        kinds = [(type(m).__name__, getattr(m, "kernel_size", None)) for m in conv.cru.body]
        assert kinds == [("Conv2d", (1, 1)), ("BatchNorm2d", None), ("ReLU", None), ("Conv2d", (3, 3)),
                         ("BatchNorm2d", None), ("ReLU", None), ("Conv2d", (3, 3)), ("BatchNorm2d", None),
                         ("ReLU", None), ("Conv2d", (1, 1))]
        assert {m.out_channels for m in conv.cru.body if isinstance(m, nn.Conv2d)} == {len(specs[name])}
        assert torch.equal(conv.conv.weight, before[f"{name}.weight"])  # the filters themselves are frozen
    for name, bn in net.dual_bns():
        assert torch.equal(bn.bn.running_mean, before[f"{name}.running_mean"])
        assert torch.equal(bn.bn.weight, before[f"{name}.weight"])
    # only the units train, and they did train
    units = net.patch_parameters()
    assert out.cost.trainable_params == sum(p.numel() for p in units)
    assert all(not p.requires_grad for n, p in net.named_parameters() if ".cru." not in f".{n}")
    fresh = PatchedNetwork(pretrained, [dc.PatchSite(**s) for s in out.extra["specs"]])
    dc.he_normal_init(fresh, 2021)
    assert not torch.equal(fresh.patch_parameters()[0], units[0])
    # checkpoint restore
    path = save_model(tmp_path / "dc.pt", net, arch="tinycnn", info=digits.info, kind=out.kind, extra=out.extra)
    x = torch.rand(6, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(load_model(path, restorers=checkpoint_restorers()).model(x), net(x))


def test_deepcorrect_batches_are_half_clean_half_distorted(make_task, blur):
    dc = plugin("deepcorrect")
    task = make_task(train_subset=40)
    data = task.train_data()
    stream = dc.PaperStream(task, data, batch_size=10, augment="none")
    order = torch.randperm(len(data), generator=make_generator(task.seed, "deepcorrect", "order", 0))
    x = torch.cat([b for b, _ in stream(0)])
    clean = to_float(data.x[order])
    for start in range(0, 40, 10):
        assert torch.equal(x[start:start + 5], clean[start:start + 5])
        for i in range(start + 5, start + 10):
            assert any(torch.allclose(x[i], blur.apply(clean[i:i + 1], c)[0]) for c in range(2))
            assert not torch.allclose(x[i], clean[i])
    step = dc.PaperStep(dc.Params(lr_step_epochs=3), stream, [])
    stream.epoch, stream.iteration = 0, 0
    assert step.factor() == 1.0
    stream.epoch, stream.iteration = 3, 1000
    assert step.factor() == pytest.approx(0.1 / (1 + 1e-5 * 1000))


# --------------------------------------------------------------------------------------------
# adversarial training: Madry's PGD-7 and TRADES' 10 steps, and nothing lowers them


def test_adversarial_defaults_are_the_papers():
    adv = plugin("adversarial")
    pgd_p, trades_p = adv.Params(), adv.Params(loss="trades")
    assert pgd_p.attack_steps() == 7 and pgd_p.alpha(8 / 255) == pytest.approx(2 / 255)
    assert trades_p.attack_steps() == 10 and trades_p.alpha(0.031) == pytest.approx(0.007)
    assert trades_p.beta == 6.0 and pgd_p.radius(3) == pytest.approx(8 / 255)
    assert adv.Params(steps=3).attack_steps() == 3  # a spec's value is used as given


@pytest.mark.parametrize("loss,train_steps", [("pgd", 7), ("trades", 10)])
def test_adversarial_runs_at_the_paper_step_count(loss, train_steps, make_task, monkeypatch):
    adv = plugin("adversarial")
    calls = []
    real_pgd, real_trades = adv.pgd, adv.trades_linf

    def pgd(model, x, *args, **kwargs):  # training batches hold 32 images, the validation batch all of val
        calls.append(("pgd" if len(x) <= 32 else "val", kwargs["steps"]))
        return real_pgd(model, x, *args, **kwargs)

    def trades_linf(model, x, *args, **kwargs):
        calls.append(("trades", kwargs["steps"]))
        return real_trades(model, x, *args, **kwargs)

    monkeypatch.setattr(adv, "pgd", pgd)
    monkeypatch.setattr(adv, "trades_linf", trades_linf)
    out = run("adversarial", make_task(train_subset=64), loss=loss, batch_size=32)
    # two training batches at the paper's step count; the start and the epoch validated with PGD-10
    assert sorted(calls) == sorted([(loss, train_steps)] * 2 + [("val", 10)] * 2)
    assert out.cost.details["steps"] == train_steps and out.cost.epochs == 1


def test_trades_attack_stays_in_the_ball_and_its_robust_term_vanishes_at_beta_zero(pretrained, digits):
    adv = plugin("adversarial")
    x, y = to_float(digits.val.x[:32]), digits.val.y[:32]
    with torch.no_grad():
        p_clean = F.softmax(pretrained(x), 1)
    x_adv = adv.trades_linf(pretrained, x, p_clean, eps=0.1, alpha=0.02, steps=10, generator=make_generator(0, "t"))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        kl = adv.kl_clean_adv(pretrained(x_adv), p_clean)
        assert kl > adv.kl_clean_adv(pretrained(x + 0.001 * torch.randn_like(x)), p_clean)
    p = adv.Params(loss="trades", beta=0.0)
    step = adv.AdversarialStep(p, 0.1, 0.02, 10, adv.EpochGenerator(0, "t", torch.device("cpu")))
    model = create_model("tinycnn", digits.info)
    model.load_state_dict(pretrained.state_dict())
    model.eval()  # fixed BN statistics, so the clean CE is comparable
    step_loss = step(model, x, y)
    model.eval()
    assert torch.allclose(step_loss, F.cross_entropy(model(x), y))


def test_bad_params_are_one_line():
    for name, params, match in [("adversarial", {"steps": 0}, "must be >= 1"),
                                ("deepcorrect", {"ratios": [0.5, 0.0]}, "fractions > 0"),
                                ("deepcorrect", {"blame": "random"}, "valid choices: priority"),
                                ("deepcorrect", {"augment": "jitter"}, "valid choices")]:
        with pytest.raises(DeepPatchError, match=match) as info:
            get_corrector(name, **params)
        assert "\n" not in str(info.value) and f"corrector {name!r}" in str(info.value)
