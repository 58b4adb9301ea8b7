"""Spatial transforms (SENSEI's search space), neighbour sets, genetic operators and the spatial suite."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from deeppatch.data import dataset_info, load_splits
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import predict
from deeppatch.models import create_model
from deeppatch.perturbations import get_perturbation
from deeppatch.perturbations.spatial import (
    BRIGHTNESS,
    CONTRAST,
    GENES,
    IDENTITY,
    ROTATION,
    SHEAR,
    TRANSLATE_X,
    TRANSLATE_Y,
    ZOOM,
    RandomWalkAugmentor,
    apply_genes,
    apply_population,
    crossover,
    draw_neighbours,
    evolve,
    identity_genes,
    init_population,
    mutate,
    neighbour_images,
    neighbour_index,
    random_genes,
    search_space,
    select_fittest,
)
from deeppatch.seeding import make_generator
from deeppatch.suites import SuiteContext, get_suite
from deeppatch.suites.spatial import materialise, quantize


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster than two fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images(n=4, c=3, size=32, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def genes_with(n, gene, value):
    g = identity_genes(n)
    g[:, gene] = value
    return g


def test_identity_neighbour_is_the_image():
    x = images()
    assert torch.equal(apply_genes(x, identity_genes(len(x))), x)


def test_translation_by_one_pixel_shifts_right_and_down_with_black_fill():
    x = images(c=1, size=8)
    right = apply_genes(x, genes_with(len(x), TRANSLATE_X, 1.0))
    assert torch.equal(right[..., 1:], x[..., :-1]) and right[..., 0].eq(0).all()
    down = apply_genes(x, genes_with(len(x), TRANSLATE_Y, 1.0))
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and down[..., 0, :].eq(0).all()


def test_rotation_by_90_degrees_is_a_clockwise_quarter_turn():
    x = images(c=1, size=6)
    assert torch.equal(apply_genes(x, genes_with(len(x), ROTATION, 90.0)), torch.rot90(x, -1, (-2, -1)))


@pytest.mark.parametrize("params", [(15, 0, 0, 0, 1.0), (-30, 2, -3, 0, 1.0), (0, 0, 0, 12, 1.0),
                                    (7, 1, 2, -9, 1.1), (13, -3, 1, 18, 0.95), (0, 0, 0, 0, 0.9)])
def test_geometry_equals_torchvision_affine_nearest(params):
    """The reference called TF.affine(angle, [tx, ty], zoom, shear) on tensors, nearest, fill 0."""
    angle, tx, ty, shear, zoom = params
    x = images()
    g = identity_genes(len(x))
    g[:, ROTATION], g[:, TRANSLATE_X], g[:, TRANSLATE_Y], g[:, SHEAR], g[:, ZOOM] = angle, tx, ty, shear, zoom
    ref = TF.affine(x, angle=angle, translate=[tx, ty], scale=zoom, shear=[float(shear), 0.0],
                    interpolation=InterpolationMode.NEAREST)
    assert torch.equal(apply_genes(x, g), ref)


def test_brightness_adds_b_over_255_and_clamps():
    x = torch.tensor([0.0, 0.5, 0.95, 1.0]).view(1, 1, 2, 2)
    up = apply_genes(x, genes_with(1, BRIGHTNESS, 32.0))
    assert torch.allclose(up.flatten(), torch.tensor([32 / 255, 0.5 + 32 / 255, 1.0, 1.0]))
    down = apply_genes(x, genes_with(1, BRIGHTNESS, -32.0))
    assert torch.allclose(down.flatten(), torch.tensor([0.0, 0.5 - 32 / 255, 0.95 - 32 / 255, 1 - 32 / 255]))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_contrast_equals_torchvision(channels, factor):
    x = images(c=channels)
    assert torch.allclose(apply_genes(x, genes_with(len(x), CONTRAST, factor)), TF.adjust_contrast(x, factor),
                          atol=1e-6)


def test_order_is_affine_then_brightness_then_contrast():
    x = images(n=2)
    g = identity_genes(2)
    g[:, ROTATION], g[:, BRIGHTNESS], g[:, CONTRAST] = 10.0, 20.0, 1.15
    ref = TF.affine(x, angle=10.0, translate=[0, 0], scale=1.0, shear=[0.0, 0.0])
    ref = TF.adjust_contrast((ref + 20 / 255).clamp(0, 1), 1.15)
    assert torch.allclose(apply_genes(x, g), ref, atol=1e-6)


def test_grids_follow_the_spec_and_scale_with_image_size():
    assert [len(g) for g in search_space(32).grids()] == [61, 7, 7, 13, 5, 33, 9]
    assert search_space(28).grids()[TRANSLATE_X].tolist() == [-2, -1, 0, 1, 2]
    assert search_space(8).grids()[TRANSLATE_Y].tolist() == [0]
    assert search_space(96, 64).grids()[TRANSLATE_X].tolist() == list(range(-6, 7))
    assert torch.allclose(search_space(32).grids()[CONTRAST].float(), torch.linspace(0.8, 1.2, 9))
    with pytest.raises(DeepPatchError, match="band"):
        search_space(32).grids(band=6)


def test_sub_range_bands_cover_the_range_with_fifth_steps():
    space = search_space(32)
    for gene, r in enumerate(space.ranges):
        bands = [space.grids(band=k)[gene] for k in range(1, 6)]
        merged = torch.unique(torch.cat(bands))
        half = r.step * r.half_steps
        assert torch.allclose(merged.min(), torch.tensor(r.lo, dtype=torch.float64))
        assert torch.allclose(merged.max(), torch.tensor(r.hi, dtype=torch.float64))
        assert len(merged) == 10 * r.half_steps + 1  # step / 5 over the whole range
        for k, band in enumerate(bands, start=1):
            dist = (band - r.centre).abs()
            assert (dist >= half * (k - 1) / 5 - 1e-9).all() and (dist <= half * k / 5 + 1e-9).all()


@pytest.mark.parametrize("band", [None, 1, 3, 5])
def test_neighbours_vary_one_gene_within_their_band(band):
    space = search_space(32)
    nb = draw_neighbours(space, 400, make_generator(0, "t", band), band=band)
    identity = torch.tensor(IDENTITY)
    for g, kind in zip(nb.genes, nb.kinds, strict=True):
        others = torch.ones(len(GENES), dtype=torch.bool)
        others[kind] = False
        assert torch.equal(g[others], identity[others])  # reference bug 18: nothing compounds
        grid = space.grids(band)[kind].float()
        assert torch.isclose(grid, g[kind]).any()


def test_neighbour_types_follow_grid_sizes_and_are_seeded():
    space = search_space(32)
    a = draw_neighbours(space, 20000, make_generator(1, "nb"))
    b = draw_neighbours(space, 20000, make_generator(1, "nb"))
    c = draw_neighbours(space, 20000, make_generator(2, "nb"))
    assert torch.equal(a.genes, b.genes) and not torch.equal(a.genes, c.genes)
    share = torch.bincount(a.kinds, minlength=7).float() / 20000
    expected = torch.tensor([61, 7, 7, 13, 5, 33, 9]) / 135
    assert torch.allclose(share, expected, atol=0.015)


def test_neighbour_set_indexing_covers_every_image_under_every_neighbour():
    """Bug 17: position i is neighbour i % K of base image i // K (not neighbour i // N)."""
    x, k = images(n=3, size=16), 5
    nb = draw_neighbours(search_space(16), k, make_generator(0, "idx"))
    full = neighbour_images(x, nb)
    assert full.shape == (3 * k, 3, 16, 16)
    for i in range(3):
        for j in range(k):
            want = apply_genes(x[i : i + 1], nb.genes[j : j + 1])
            assert torch.equal(full[i * k + j], want[0])
    base, neighbour = neighbour_index(torch.arange(3 * k), k)
    assert torch.equal(torch.bincount(base), torch.full((3,), k))
    assert all(sorted(neighbour[base == i].tolist()) == list(range(k)) for i in range(3))
    assert torch.equal(neighbour_images(x, nb, 4, 9), full[4:9])


def test_spatial_family_bands_are_seeded_and_grow_in_strength():
    family = get_perturbation("spatial")
    assert family.conditions == tuple(f"range={k}/5" for k in range(1, 6))
    x = images(n=200, size=16)
    one = family.apply(x, 0, make_generator(0, "s"))
    assert torch.equal(one, family.apply(x, 0, make_generator(0, "s")))
    five = family.apply(x, 4, make_generator(0, "s"))
    assert 0 <= five.min() and five.max() <= 1 and five.shape == x.shape
    assert (one - x).abs().mean() < (five - x).abs().mean()
    with pytest.raises(DeepPatchError, match="outside"):
        family.apply(x, 5)


def test_mutation_changes_at_most_four_genes_within_bounds():
    space = search_space(32)
    g = random_genes(500, space, make_generator(0, "m"))
    for j, grid in enumerate(space.grids()):
        assert torch.isin(g[:, j], grid.float()).all()
    m = mutate(g, space, make_generator(0, "m2"))
    lo, hi = space.bounds()
    assert ((m >= lo - 1e-6) & (m <= hi + 1e-6)).all()
    changed = (m != g).sum(1)
    assert changed.max() <= 4 and changed.float().mean() > 2
    assert torch.equal(m, mutate(g, space, make_generator(0, "m2")))
    flip = mutate(torch.tensor([IDENTITY]), space, make_generator(3, "m"), num_genes=7)
    assert ((flip >= lo - 1e-6) & (flip <= hi + 1e-6)).all()


def test_crossover_mixes_parents_into_new_tensors():
    """Bug 19: genes are swapped with a probability, children are copies, not the parents' objects."""
    space = search_space(32)
    a = random_genes(300, space, make_generator(0, "a"))
    b = random_genes(300, space, make_generator(0, "b"))
    c1, c2 = crossover(a, b, make_generator(0, "x"))
    assert torch.equal(c1 + c2, a + b)
    from_a = (c1 == a) & (a != b)
    from_b = (c1 == b) & (a != b)
    assert from_a.any(1).float().mean() > 0.9 and from_b.any(1).float().mean() > 0.9
    c1[0, 0] = 1234.0
    assert a[0, 0] != 1234.0 and b[0, 0] != 1234.0
    same, _ = crossover(a, b, make_generator(0, "x"), swap_prob=0.0)
    assert torch.equal(same, a)


def test_population_evolution_and_selection():
    space = search_space(32)
    pop = init_population(8, space, make_generator(0, "p"), popsize=10)
    grown = evolve(pop, space, make_generator(0, "e"))
    assert grown.shape == (8, 20, 7) and torch.equal(grown[:, :10], pop)
    lo, hi = space.bounds()
    assert ((grown >= lo - 1e-6) & (grown <= hi + 1e-6)).all()
    scores = torch.arange(20.0).repeat(8, 1)
    best = select_fittest(grown, scores, 10)
    assert torch.equal(best, grown[:, 10:].flip(1))
    x = images(n=8, size=16)
    out = apply_population(x, best[:, :3])
    assert out.shape == (24, 3, 16, 16)
    assert torch.equal(out[4], apply_genes(x[1:2], best[1, 1:2])[0])


def test_random_walk_keeps_one_chromosome_per_sample():
    space = search_space(16)
    aug = RandomWalkAugmentor(10, space, make_generator(0, "rw"))
    start = aug.state.clone()
    x = images(n=3, size=16)
    out = aug(x, torch.tensor([1, 4, 7]))
    changed = (aug.state != start).any(1)
    assert changed[[1, 4, 7]].all() and not changed[[0, 2, 3, 5, 6, 8, 9]].any()
    assert torch.equal(out, apply_genes(x, aug.state[[1, 4, 7]]))
    again = RandomWalkAugmentor(10, space, make_generator(0, "rw"))
    assert torch.equal(again(x, torch.tensor([1, 4, 7])), out)


@pytest.fixture(scope="module")
def digits_test():
    return load_splits("digits", val_fraction=0.1).test


def test_spatial_suite_rows_match_a_direct_computation_and_use_the_cache(tmp_path, digits_test):
    torch.manual_seed(0)
    info = dataset_info("digits")
    model = create_model("tinycnn", info).eval()
    suite = get_suite("spatial", k=4, n=30)
    ctx = SuiteContext(info=info, test=digits_test, device=torch.device("cpu"), seed=3, batch_size=64,
                       cache_dir=tmp_path)
    rows = suite.evaluate(model, ctx)
    by = {r.condition: r for r in rows}
    assert {"neighbours", *(f"range={k}/5" for k in range(1, 6))} <= set(by)
    assert all(r.n == 120 for r in rows if r.group != "transform")
    assert sum(r.n for r in rows if r.group == "transform") == 120
    assert len(list((tmp_path / "spatial").glob("*.pt"))) == 6
    # the same number by hand: neighbour set of the same subset, quantised to 8 bits
    from deeppatch.data import stratified_subset
    from deeppatch.suites.spatial import neighbour_set

    base = stratified_subset(digits_test, 30, seed=3)
    nset = neighbour_set(base, dataset="digits", seed=3, k=4, band=None)
    assert not nset.from_cache
    direct = materialise(base, nset.neighbours)
    assert torch.equal(direct.x, quantize(neighbour_images(base.x.float() / 255, nset.neighbours)))
    pred = predict(model, direct, batch_size=64)
    assert by["neighbours"].value == pytest.approx(100 * pred.eq(direct.y).float().mean().item())
    again = {r.condition: r for r in suite.evaluate(model, ctx)}
    assert again["neighbours"].settings["cached"] is True
    assert [again[c].value for c in by] == [by[c].value for c in by]


def test_spatial_suite_settings_are_validated():
    with pytest.raises(DeepPatchError, match="k must be"):
        get_suite("spatial", k=0)
    with pytest.raises(DeepPatchError, match="unknown setting"):
        get_suite("spatial", neighbours=5)
    with pytest.raises(DeepPatchError, match="sub_ranges"):
        get_suite("spatial", sub_ranges="yes")
