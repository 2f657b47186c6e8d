"""SuPAIR model: the ELBO against a direct computation, masks, glimpses, learning, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from supair.config import InferenceConfig, ModelConfig, SPNConfig
from supair.inference import check_images, count_posterior
from supair.model import Supair
from supair.transform import box_coverage, cut_glimpses, paste_glimpses


def tiny_config(**changes) -> ModelConfig:
    base = dict(
        scene_size=12,
        glimpse_size=6,
        max_steps=2,
        object_spn=SPNConfig(depth=1, repetitions=2, num_leaves=3, num_sums=2),
        background_spn=SPNConfig(depth=1, repetitions=2, num_leaves=2, num_sums=2, min_var=0.01, max_var=0.1),
        inference=InferenceConfig(lstm_units=16, head_units=8),
    )
    base.update(changes)
    return ModelConfig(**base)


@pytest.fixture
def model() -> Supair:
    torch.manual_seed(0)
    return Supair(tiny_config()).double()


def test_count_posterior_sums_to_one() -> None:
    logits = torch.randn(7, 3, dtype=torch.float64) * 3
    q = count_posterior(logits).exp()
    assert torch.allclose(q.sum(1), torch.ones(7, dtype=torch.float64))
    p = torch.sigmoid(logits)
    assert torch.allclose(q[:, 0], 1 - p[:, 0])
    assert torch.allclose(q[:, 3], p.prod(1))


def test_identity_glimpse_equals_image() -> None:
    img = torch.rand(2, 1, 10, 10, dtype=torch.float64)
    where = torch.tensor([[10.0, 10.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    assert torch.allclose(cut_glimpses(img, where, 10), img, atol=1e-12)
    assert torch.allclose(paste_glimpses(img, where, 10), img, atol=1e-12)


def test_glimpses_match_affine_grid_in_values_and_gradients() -> None:
    """cut/paste build their sampling grids by broadcasting (the maps are axis-aligned); they equal
    F.affine_grid of the documented theta, values and gradients, boxes partly outside the canvas included."""
    from supair.transform import box_to_theta, glimpse_to_image_theta
    from torch.nn import functional as F

    gen = torch.Generator().manual_seed(0)
    where = torch.rand(5, 4, generator=gen, dtype=torch.float64) * torch.tensor([8.0, 10.0, 14.0, 14.0], dtype=torch.float64)
    where = (where + torch.tensor([3.0, 3.0, -3.0, -3.0], dtype=torch.float64)).requires_grad_()
    img = torch.rand(5, 2, 12, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    glimpse = torch.rand(5, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    cases = [
        (cut_glimpses(img, where, 6),
         lambda: F.grid_sample(img, F.affine_grid(box_to_theta(where, 12), [5, 2, 6, 6], align_corners=False), align_corners=False), img),
        (paste_glimpses(glimpse, where, 12),
         lambda: F.grid_sample(glimpse, F.affine_grid(glimpse_to_image_theta(where, 12), [5, 2, 12, 12], align_corners=False), align_corners=False), glimpse),
    ]
    for got, ref_fn, source in cases:
        ref = ref_fn()
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)
        g = torch.randn(got.shape, generator=gen, dtype=torch.float64)
        for a, b in zip(torch.autograd.grad((got * g).sum(), [source, where]), torch.autograd.grad((ref * g).sum(), [source, where])):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def _direct_elbo(model: Supair, images: torch.Tensor, inf) -> torch.Tensor:
    """The ELBO formula evaluated image by image and alternative by alternative."""
    cfg = model.cfg
    N, G, S = cfg.max_steps, cfg.glimpse_size, cfg.scene_size
    out = []
    for b in range(images.shape[0]):
        x = images[b : b + 1]
        p = torch.sigmoid(inf.pres_logits[b])
        visible = torch.ones(1, 1, S, S, dtype=x.dtype)
        obj_terms, overlap_terms, vis_after = [], [], [visible]
        for i in range(N):
            where = inf.where[b, i : i + 1].detach()
            glimpse = cut_glimpses(x, where, G)
            hidden = 1 - cut_glimpses(visible, where, G)
            ll = model.object_spn.log_prob(glimpse.reshape(1, -1), marginalized=hidden.reshape(1, -1).clamp(0, 1))
            obj_terms.append(ll[0] * where[0, 0] * where[0, 1] / G**2)
            f = hidden.clamp(0, 1).mean()
            overlap_terms.append(math.log(cfg.prior.overlap_rate) - cfg.prior.overlap_rate * f)
            x0, y0 = float(where[0, 2]), float(where[0, 3])
            x1, y1 = x0 + float(where[0, 0]), y0 + float(where[0, 1])
            cover = torch.tensor([[max(0.0, min(r + 1, y1) - max(r, y0)) * max(0.0, min(c + 1, x1) - max(c, x0)) for c in range(S)]
                                  for r in range(S)], dtype=x.dtype)
            visible = visible * (1 - cover.clamp(max=1))
            vis_after.append(visible)
        total = torch.zeros((), dtype=x.dtype)
        for n in range(N + 1):
            q_n = torch.prod(p[:n]) * (1 - p[n] if n < N else 1)
            bg = model.background_spn.log_prob(x.reshape(1, -1), marginalized=(1 - vis_after[n]).reshape(1, -1).clamp(0, 1))[0]
            log_joint = sum(obj_terms[:n], torch.zeros((), dtype=x.dtype)) + bg + cfg.prior.count_log_p0 - cfg.prior.count_rate * n
            log_joint = log_joint + sum(overlap_terms[:n], torch.zeros((), dtype=x.dtype))
            total = total + q_n * (log_joint - torch.log(q_n))
        log_q_where = torch.distributions.Normal(inf.where_loc[b], inf.where_std[b]).log_prob(inf.where_sample[b]).sum()
        out.append(total - log_q_where)
    return torch.stack(out)


def test_elbo_matches_direct_computation(model: Supair) -> None:
    images = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    inf = model.infer(images)
    elbo, _ = model.elbo(images, inf)
    assert torch.allclose(elbo, _direct_elbo(model, images, inf), rtol=1e-9, atol=1e-8)


def _two_boxes(model: Supair, images: torch.Tensor):
    inf = model.infer(images, sample=False)
    # object 0 covers columns 0..5, object 1 columns 3..8; both full height
    inf.where = torch.tensor([[[6.0, 12.0, 0.0, 0.0], [6.0, 12.0, 3.0, 0.0]]], dtype=torch.float64).expand(images.shape[0], -1, -1).clone()
    return inf


def test_occluded_pixels_are_marginalized(model: Supair) -> None:
    images = torch.rand(1, 1, 12, 12, dtype=torch.float64) * 0.5
    inf = _two_boxes(model, images)
    base = model.log_joint(images, inf)
    changed = images.clone()
    changed[0, 0, :, 4] = 1.0  # a column covered by object 0 and inside object 1's box
    after = model.log_joint(changed, inf)
    assert not torch.allclose(base["objects"][0, 0], after["objects"][0, 0])  # object 0 sees it
    assert torch.allclose(base["objects"][0, 1], after["objects"][0, 1])  # hidden from object 1
    assert not torch.allclose(base["background"][0, 0], after["background"][0, 0])  # no object: background sees it
    assert torch.allclose(base["background"][0, 1:], after["background"][0, 1:])  # covered in alternatives n >= 1
    # the masks given to the SPNs say the same
    assert base["background_mask"][0, 1].view(12, 12)[:, 4].min() > 0.999
    assert base["object_mask"][0, 1].max() > 0.999


def test_uncovered_pixel_reaches_background_only(model: Supair) -> None:
    images = torch.rand(1, 1, 12, 12, dtype=torch.float64) * 0.5
    inf = _two_boxes(model, images)
    base = model.log_joint(images, inf)
    changed = images.clone()
    changed[0, 0, 5, 11] = 1.0  # right of both boxes
    after = model.log_joint(changed, inf)
    assert torch.allclose(base["objects"], after["objects"])
    assert not torch.allclose(base["background"][0, 2], after["background"][0, 2])


def test_training_steps_raise_elbo_on_fixed_batch() -> None:
    torch.manual_seed(1)
    model = Supair(tiny_config())
    images = torch.zeros(16, 1, 12, 12)
    images[:8, :, 2:7, 2:7] = 0.9
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(2)
    before = model.elbo(images)[0].mean().item()
    for _ in range(40):
        loss, _ = model.loss(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(2)
    after = model.elbo(images)[0].mean().item()
    assert after > before + 10


def test_every_parameter_gets_a_gradient(model: Supair) -> None:
    loss, _ = model.loss(torch.rand(4, 1, 12, 12, dtype=torch.float64))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_residual_fill_is_the_most_probable_background(model: Supair) -> None:
    """The background SPN's MPE with nothing observed, per image as the SPN computes it, from one pass broadcast."""
    images = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    fill = model.residual_fill(images)
    expected = model.background_spn.mpe(images.permute(0, 2, 3, 1).reshape(3, 144), keep_observed=False)
    assert fill.shape == images.shape
    torch.testing.assert_close(fill.reshape(3, 144), expected.clamp(0, 1), atol=0, rtol=0)
    assert (expected[1:] == expected[0]).all()  # nothing observed: the images do not matter
    assert model.residual_fill(images).requires_grad is False
    assert Supair(tiny_config(background_model=False)).residual_fill(images.float()) is None
    zero = Supair(tiny_config(inference=InferenceConfig(lstm_units=16, head_units=8, fill="zero")))
    assert zero.residual_fill(images.float()) is None


def test_fill_shows_only_where_earlier_boxes_were(model: Supair) -> None:
    images = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    net = model.inference
    plain = net(images, sample=False)
    filled = net(images, sample=False, fill=torch.ones_like(images))
    assert torch.allclose(plain[0][:, 0], filled[0][:, 0]) and torch.allclose(plain[1][:, 0], filled[1][:, 0])
    assert not torch.allclose(plain[0][:, 1], filled[0][:, 1])  # the second step sees ones inside box 1
    ones = torch.ones_like(images)  # filled with itself, every step sees the whole image: same outputs
    same = net(ones, sample=False, fill=ones)
    assert torch.allclose(same[0][:, 0], same[0][:, 1]) and torch.allclose(same[1][:, 0], same[1][:, 1])


def test_configs_saved_before_fill_keep_zero_fill() -> None:
    from supair.config import SupairConfig
    d = SupairConfig().to_dict()
    assert SupairConfig.from_dict(d).model.inference.fill == "background"
    del d["model"]["inference"]["fill"]
    assert SupairConfig.from_dict(d).model.inference.fill == "zero"
    with pytest.raises(ValueError, match="fill"):
        SupairConfig().replace(**{"model.inference.fill": "noise"})


def test_no_background_model_uses_fixed_normal() -> None:
    model = Supair(tiny_config(background_model=False))
    assert model.background_spn is None
    assert torch.isfinite(model.loss(torch.rand(2, 1, 12, 12))[0])


def test_colour_model_runs() -> None:
    model = Supair(tiny_config(channels=3))
    assert torch.isfinite(model.loss(torch.rand(2, 3, 12, 12))[0])
    ex = model.explain(torch.rand(2, 3, 12, 12))
    assert ex["reconstruction"].shape == (2, 3, 12, 12)
    assert ex["completions"].shape == (2, 2, 3, 6, 6)


def test_explain_keeps_visible_glimpse_pixels(model: Supair) -> None:
    images = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    ex = model.explain(images)
    visible = ex["hidden"] <= 0.5
    assert torch.equal(ex["completions"][visible.expand_as(ex["completions"])], ex["glimpses"][visible.expand_as(ex["glimpses"])])


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 1, 10, 10), "shape"),
        (torch.rand(2, 3, 12, 12), "shape"),
        (torch.rand(12, 12), "shape"),
        (torch.full((1, 1, 12, 12), 1.5), "[0, 1]"),
        (torch.full((1, 1, 12, 12), float("nan")), "NaN"),
        (torch.zeros(1, 1, 12, 12, dtype=torch.long), "dtype"),
    ],
)
def test_bad_images_raise(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_images(images, tiny_config())


def test_position_std_has_its_own_bound() -> None:
    torch.manual_seed(0)
    icfg = InferenceConfig(lstm_units=16, head_units=8, max_std=0.1, position_max_std=2.0)
    net = Supair(tiny_config(inference=icfg)).double()
    inf = net.infer(torch.rand(5, 1, 12, 12, dtype=torch.float64))
    assert (inf.where_std[..., :2] < 0.1).all() and (inf.where_std[..., 2:] < 2.0).all()
    assert (inf.where_std[..., 2:] > 0.1).any()  # sigmoid(.) ~ 0.5 at the start: about 1 px
    with pytest.raises(ValueError, match="position_max_std"):
        InferenceConfig(position_max_std=0.0).assert_valid()


def test_prior_rates_ramp_with_training_steps() -> None:
    from supair.config import PriorConfig

    torch.manual_seed(0)
    prior = PriorConfig(count_rate=10.0, count_rate_start=1.0, overlap_rate=200.0, overlap_rate_start=100.0, anneal_steps=4)
    net = Supair(tiny_config(prior=prior)).double()
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    rates = []
    for _ in range(6):
        rates.append((float(net.prior_rate("count_rate")), float(net.prior_rate("overlap_rate"))))
        net.loss(x)[0].backward()
    assert [r[0] for r in rates] == pytest.approx([1.0, 3.25, 5.5, 7.75, 10.0, 10.0])
    assert [r[1] for r in rates] == pytest.approx([100.0, 125.0, 150.0, 175.0, 200.0, 200.0])
    with torch.no_grad():  # evaluation does not advance the ramps
        net.loss(x)
    assert int(net.updates) == 6
    # the rates enter log p(n) = log_p0 - rate * n and the overlap prior log(rate) - rate * f
    inf = net.infer(x)
    out = net.log_joint(x, inf)
    net.updates.zero_()
    lj0 = net.log_joint(x, inf)["log_joint"]
    n = torch.arange(3, dtype=torch.float64)
    f = torch.nn.functional.pad(torch.cumsum(out["overlap"], 1), (1, 0))
    g = torch.nn.functional.pad(torch.ones_like(out["overlap"]).cumsum(1), (1, 0))
    expected = 9.0 * n + 100.0 * f - math.log(2.0) * g  # (start - end) terms
    assert torch.allclose(lj0 - out["log_joint"], expected)
    # checkpoints from before the counter load with it at zero
    state = {k: v for k, v in net.state_dict().items() if k != "updates"}
    net.updates.fill_(3)
    net.load_state_dict(state)
    assert int(net.updates) == 0


def test_overlap_ramp_has_its_own_window() -> None:
    """The overlap rate can ramp later and over a different number of steps than the count rate."""
    from supair.config import PriorConfig

    prior = PriorConfig(count_rate=10.0, count_rate_start=1.0, overlap_rate=200.0, overlap_rate_start=100.0, anneal_steps=8,
                        overlap_anneal_begin=2, overlap_anneal_steps=4)
    net = Supair(tiny_config(prior=prior))
    got = []
    for step in range(9):
        net.updates.fill_(step)
        got.append((float(net.prior_rate("count_rate")), float(net.prior_rate("overlap_rate"))))
    assert [g[0] for g in got] == pytest.approx([1.0 + 9.0 * s / 8 for s in range(9)])
    assert [g[1] for g in got] == pytest.approx([100.0, 100.0, 100.0, 125.0, 150.0, 175.0, 200.0, 200.0, 200.0])
    with pytest.raises(ValueError, match="overlap_anneal_steps"):
        PriorConfig(overlap_anneal_steps=-1).assert_valid()
    with pytest.raises(ValueError, match="anneal_steps"):
        PriorConfig(anneal_steps=-1).assert_valid()
    with pytest.raises(ValueError, match="overlap_anneal_begin"):
        PriorConfig(overlap_anneal_begin=-1).assert_valid()


def test_overlap_ramp_can_begin_later() -> None:
    from supair.config import PriorConfig

    prior = PriorConfig(count_rate=10.0, count_rate_start=1.0, overlap_rate=200.0, overlap_rate_start=100.0, anneal_steps=4,
                        overlap_anneal_begin=2)
    net = Supair(tiny_config(prior=prior)).double()
    got = []
    for step in range(8):
        net.updates.fill_(step)
        got.append((float(net.prior_rate("count_rate")), float(net.prior_rate("overlap_rate"))))
    assert [g[0] for g in got] == pytest.approx([1.0, 3.25, 5.5, 7.75, 10.0, 10.0, 10.0, 10.0])  # count: from step 0
    assert [g[1] for g in got] == pytest.approx([100.0, 100.0, 100.0, 125.0, 150.0, 175.0, 200.0, 200.0])


def test_detection_search_keeps_the_best_hypothesis_per_image() -> None:
    torch.manual_seed(0)
    icfg = InferenceConfig(lstm_units=16, head_units=8, search_radius=2.0, search_grid=3)
    model = Supair(tiny_config(inference=icfg)).double()
    images = torch.rand(6, 1, 12, 12, dtype=torch.float64)
    offsets = model.search_offsets()
    assert offsets.shape == (8, 2) and not (offsets == 0).all(1).any()  # the network's box is not repeated
    plain = model.detect(images, search=False)
    searched = model.detect(images)
    again, network = model.detect_with_network(images)  # the evaluation's one pass: both detections
    torch.testing.assert_close(again.where, searched.where)
    torch.testing.assert_close(network.where, plain.where)
    torch.testing.assert_close(network.pres_logits, plain.pres_logits)
    # every candidate's score, computed here one image at a time from first_offset
    fill = model.residual_fill(images)
    scores = [model.count_elbo(images, plain)]
    for off in offsets.double():
        scores.append(model.count_elbo(images, model.infer(images, sample=False, fill=fill, first_offset=off.expand(6, 2))))
    best = torch.stack(scores, 1).max(1).values
    torch.testing.assert_close(model.count_elbo(images, searched), best)
    assert (best >= scores[0]).all() and (best > scores[0]).any()  # the search moved some first boxes
    moved = (searched.where[:, 0, 2:] - plain.where[:, 0, 2:]).abs()
    assert (moved <= 2.0 + 1e-9).all()
    # the first box's size is the network's; only its corner moves
    torch.testing.assert_close(searched.where[:, 0, :2], plain.where[:, 0, :2])


def test_detection_search_off_is_the_network_alone() -> None:
    torch.manual_seed(0)
    model = Supair(tiny_config(inference=InferenceConfig(lstm_units=16, head_units=8, search_radius=0.0))).double()
    images = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    assert len(model.search_offsets()) == 0
    torch.testing.assert_close(model.detect(images).where, model.infer(images, sample=False).where)
    with pytest.raises(ValueError, match="search_radius"):
        InferenceConfig(search_radius=-1.0).assert_valid()


def test_first_offset_moves_the_first_box_within_the_position_range(model: Supair) -> None:
    images = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    plain = model.infer(images, sample=False)
    far = model.infer(images, sample=False, first_offset=torch.full((3, 2), 100.0, dtype=torch.float64))
    hi = model.cfg.inference.position_range[1] * model.cfg.scene_size
    assert torch.allclose(far.where[:, 0, 2:], torch.full((3, 2), hi, dtype=torch.float64))
    small = model.infer(images, sample=False, first_offset=torch.full((3, 2), -0.5, dtype=torch.float64))
    lo = model.cfg.inference.position_range[0] * model.cfg.scene_size
    torch.testing.assert_close(small.where[:, 0, 2:], (plain.where[:, 0, 2:] - 0.5).clamp_min(lo))


def test_visibility_is_the_running_product_of_uncovered_fractions(model: Supair) -> None:
    where = torch.tensor([[[6.0, 12.0, 0.0, 0.0], [6.0, 12.0, 3.0, 0.0]], [[4.5, 3.2, 1.3, 2.7], [7.1, 5.0, 4.4, 6.0]]],
                         dtype=torch.float64, requires_grad=True)
    vis = model.visibility(where)
    free = 1 - box_coverage(where, 12)
    ref = torch.cumprod(torch.cat([torch.ones_like(free[:, :1]), free], 1), 1)
    torch.testing.assert_close(vis, ref)
    assert (vis == 0).any()  # wholly covered pixels: the case torch.cumprod's backward treats separately
    g = torch.randn_like(vis)
    got, = torch.autograd.grad((vis * g).sum(), where)
    want, = torch.autograd.grad((ref * g).sum(), where)
    torch.testing.assert_close(got, want)


def _lstm_config(recurrent: bool) -> ModelConfig:
    return tiny_config(inference=InferenceConfig(lstm_units=16, head_units=8, recurrent=recurrent))


def test_non_recurrent_steps_are_an_lstm_cell_from_a_zero_state() -> None:
    torch.manual_seed(0)
    four = Supair(_lstm_config(True)).double()  # every gate and the hidden projection, as a full-cell checkpoint stores them
    model = Supair(_lstm_config(False)).double()
    assert model.inference.input_gates.out_features == 3 * 16 and model.inference.hidden_gates is None
    model.load_state_dict(four.state_dict())  # the forget gate's rows and the hidden projection are dropped
    images = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    cell = torch.nn.LSTMCell(144, 16).double()
    with torch.no_grad():
        cell.weight_ih.copy_(four.inference.input_gates.weight)
        cell.bias_ih.copy_(four.inference.input_gates.bias)
        cell.weight_hh.copy_(four.inference.hidden_gates.weight)
        cell.bias_hh.zero_()
    h, _ = cell(images.reshape(3, 144))  # (h, c) = 0 by default
    out = model.inference.head(h)
    logits, loc, _, _ = model.inference(images, sample=False)
    bound = model.cfg.inference.presence_bound
    torch.testing.assert_close(logits[:, 0], bound * torch.tanh(out[:, 0] / bound))
    torch.testing.assert_close(loc[:, 0], model.inference.box_mean(out[:, 1:5]))


def test_optimizer_state_of_the_four_gate_layout_is_upgraded() -> None:
    from supair.checkpoint import upgrade_optimizer_state
    torch.manual_seed(0)
    model = Supair(_lstm_config(False))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.loss(torch.rand(4, 1, 12, 12))[0].backward()
    opt.step()
    now = opt.state_dict()
    assert upgrade_optimizer_state(model, model.state_dict(), now) is now  # same layout: unchanged
    # the same state as the old layout stored it: forget-gate rows between i and g, the hidden projection third
    U, names = 16, [n for n, _ in model.named_parameters()]

    def four_gates(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:U], torch.randn_like(t[:U]), t[U:]]) if t.dim() else t

    old_model = {}
    for k, v in model.state_dict().items():
        old_model[k] = four_gates(v) if k.startswith("inference.input_gates") else v
        if k == "inference.input_gates.bias":
            old_model["inference.hidden_gates.weight"] = torch.randn(4 * U, U)
    old_names = [k for k in old_model if k != "updates"]
    assert old_names[2] == "inference.hidden_gates.weight"
    old_state = {}
    for i, n in enumerate(old_names):
        if n == "inference.hidden_gates.weight":
            old_state[i] = {"step": torch.tensor(1.0), "exp_avg": torch.randn(4 * U, U), "exp_avg_sq": torch.rand(4 * U, U)}
        else:
            s = now["state"][names.index(n)]
            old_state[i] = {f: four_gates(v) if n.startswith("inference.input_gates") else v for f, v in s.items()}
    old = {"state": old_state, "param_groups": [dict(now["param_groups"][0], params=list(range(len(old_names))))]}
    up = upgrade_optimizer_state(model, old_model, old)
    assert up["param_groups"] == now["param_groups"] and up["state"].keys() == now["state"].keys()
    for j, s in now["state"].items():
        for f, v in s.items():
            assert torch.equal(up["state"][j][f], v), (names[j], f)
    opt.load_state_dict(up)
