"""Losses against the independent numpy references in reference_losses.py: values and student gradients."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segdistill.paddle_env import paddle  # noqa: E402

import paddle.nn.functional as F  # noqa: E402

import reference_losses as ref  # noqa: E402
from segdistill.errors import SegDistillError  # noqa: E402
from segdistill.losses import available, cross_entropy, get_loss, register  # noqa: E402

IGNORE = 255
DISTILL = ["kl", "cwd", "channelwise_legacy", "mse"]


def _ref(name, s, t, label=None, temperature=1.0):
    if name == "kl":
        return ref.kl_ref(s, t, label, IGNORE, temperature)
    if name == "cwd":
        return ref.cwd_ref(s, t, temperature)
    if name == "channelwise_legacy":
        return ref.channelwise_legacy_ref(s, t)
    return ref.mse_ref(s, t)


def _data(shape, seed, with_label=True, label_shape=None, ignore_frac=0.3):
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=2.0, size=shape)
    t = rng.normal(scale=2.0, size=shape)
    if not with_label:
        return s, t, None
    n, c, h, w = shape
    lh, lw = label_shape or (h, w)
    label = rng.integers(0, c, size=(n, lh, lw))
    label[rng.random((n, lh, lw)) < ignore_frac] = IGNORE
    return s, t, label


# (loss, shape N x C x H x W with C != H != W, temperature, label?)
CASES = [
    ("kl", (2, 3, 4, 5), 1.0, False),
    ("kl", (2, 3, 4, 5), 1.0, True),
    ("kl", (3, 5, 2, 6), 4.0, True),
    ("kl", (1, 4, 3, 2), 4.0, False),
    ("cwd", (2, 3, 4, 5), 1.0, False),
    ("cwd", (3, 5, 2, 6), 4.0, True),  # a label is accepted and has no effect
    ("channelwise_legacy", (2, 3, 4, 5), 1.0, False),
    ("channelwise_legacy", (3, 5, 2, 6), 1.0, True),
    ("mse", (2, 3, 4, 5), 1.0, False),
    ("mse", (3, 5, 2, 6), 1.0, True),
]


@pytest.mark.parametrize("name,shape,temperature,with_label", CASES)
@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float64", 1e-10)])
def test_value_matches_reference(name, shape, temperature, with_label, dtype, rtol):
    s, t, label = _data(shape, seed=sum(shape) * 10 + len(name), with_label=with_label)
    expected = _ref(name, s, t, label, temperature)
    out = get_loss(name)(
        paddle.to_tensor(s.astype(dtype)),
        paddle.to_tensor(t.astype(dtype)),
        label=None if label is None else paddle.to_tensor(label),
        ignore_index=IGNORE,
        temperature=temperature,
    )
    assert out.shape == [] and str(out.dtype).endswith(dtype)
    assert float(out) == pytest.approx(expected, rel=rtol, abs=1e-12)


@pytest.mark.parametrize("name,shape,temperature,with_label", CASES)
def test_student_gradient_matches_finite_differences(name, shape, temperature, with_label):
    s, t, label = _data(shape, seed=7 + len(name), with_label=with_label)
    student = paddle.to_tensor(s, stop_gradient=False)
    teacher = paddle.to_tensor(t, stop_gradient=False)
    loss = get_loss(name)(
        student,
        teacher,
        label=None if label is None else paddle.to_tensor(label),
        ignore_index=IGNORE,
        temperature=temperature,
    )
    loss.backward()
    numeric = ref.numeric_grad(lambda x: _ref(name, x, t, label, temperature), s)
    assert np.abs(numeric).max() > 1e-4  # the comparison below is not between two zero arrays
    np.testing.assert_allclose(student.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)
    # The teacher is detached inside the loss: nothing flows back into it.
    assert teacher.grad is None


@pytest.mark.parametrize("name", DISTILL)
def test_teacher_graph_receives_no_gradient(name):
    # The teacher output comes from a trainable layer, as in a real teacher; its weights must stay untouched.
    rng = np.random.default_rng(3)
    weight = paddle.to_tensor(rng.normal(size=(2, 3, 4, 5)), stop_gradient=False)
    teacher = weight * 2.0
    student = paddle.to_tensor(rng.normal(size=(2, 3, 4, 5)), stop_gradient=False)
    get_loss(name)(student, teacher).backward()
    assert weight.grad is None
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_kl_ignored_pixels_do_not_contribute_to_value_or_gradient():
    s, t, label = _data((2, 3, 4, 5), seed=11, ignore_frac=0.4)
    student = paddle.to_tensor(s, stop_gradient=False)
    loss = get_loss("kl")(student, paddle.to_tensor(t), label=paddle.to_tensor(label), temperature=4.0)
    loss.backward()
    ignored = np.broadcast_to((label == IGNORE)[:, None], s.shape)
    assert ignored.any() and (~ignored).any()
    assert np.all(student.grad.numpy()[ignored] == 0)
    assert np.all(student.grad.numpy()[~ignored] != 0)
    # Changing the student at ignored pixels leaves the loss unchanged.
    s2 = s.copy()
    s2[ignored] += 10.0
    loss2 = get_loss("kl")(paddle.to_tensor(s2), paddle.to_tensor(t), label=paddle.to_tensor(label), temperature=4.0)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-12)


def test_kl_all_ignored_is_zero_not_nan():
    s, t, _ = _data((2, 3, 4, 5), seed=12, with_label=False)
    label = np.full((2, 4, 5), IGNORE)
    student = paddle.to_tensor(s, stop_gradient=False)
    loss = get_loss("kl")(student, paddle.to_tensor(t), label=paddle.to_tensor(label))
    loss.backward()
    assert float(loss) == 0.0
    assert np.all(np.isfinite(student.grad.numpy()))


def test_kl_matches_paddleseg_klloss():
    from paddleseg.models.losses import KLLoss

    s, t, label = _data((2, 4, 6, 5), seed=13)
    s32, t32 = paddle.to_tensor(s.astype("float32")), paddle.to_tensor(t.astype("float32"))
    lab = paddle.to_tensor(label)
    for temperature in (1.0, 4.0):
        theirs = KLLoss(ignore_index=IGNORE, temperature=temperature)(s32, t32, lab)
        ours = get_loss("kl")(s32, t32, label=lab, ignore_index=IGNORE, temperature=temperature)
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    theirs = KLLoss(temperature=2.0)(s32, t32)
    assert float(get_loss("kl")(s32, t32, temperature=2.0)) == pytest.approx(float(theirs), rel=1e-5)


def test_kl_label_with_channel_axis_and_other_ignore_index():
    s, t, label = _data((2, 3, 4, 5), seed=14)
    label[label == IGNORE] = 0
    label[:, 0, :] = 2  # the "ignored" class for this test
    st, tt = paddle.to_tensor(s), paddle.to_tensor(t)
    a = get_loss("kl")(st, tt, label=paddle.to_tensor(label), ignore_index=2)
    b = get_loss("kl")(st, tt, label=paddle.to_tensor(label[:, None]), ignore_index=2)
    assert float(a) == float(b)
    assert float(a) == pytest.approx(ref.kl_ref(s, t, label, 2), rel=1e-10)


@pytest.mark.parametrize("label_hw", [(8, 10), (2, 3), (7, 4)])
def test_kl_label_of_other_size_is_resized_nearest(label_hw):
    s, t, label = _data((2, 3, 4, 5), seed=15, label_shape=label_hw, ignore_frac=0.5)
    out = get_loss("kl")(paddle.to_tensor(s), paddle.to_tensor(t), label=paddle.to_tensor(label))
    assert float(out) == pytest.approx(ref.kl_ref(s, t, label), rel=1e-10)
    # and the resize really picked pixels: a 2x label whose odd rows/cols are ignored keeps everything
    if label_hw == (8, 10):
        big = np.full((2, 8, 10), IGNORE)
        big[:, ::2, ::2] = 1
        out = get_loss("kl")(paddle.to_tensor(s), paddle.to_tensor(t), label=paddle.to_tensor(big))
        assert float(out) == pytest.approx(ref.kl_ref(s, t, None) / (1 + 1e-8), rel=1e-10)


def test_label_resize_reference_is_nearest():
    # 2 x 3 -> 4 x 6: every input pixel becomes a 2 x 2 block.
    label = np.array([[[1, 2, 3], [4, 5, 6]]])
    expected = np.array([[[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]]])
    np.testing.assert_array_equal(ref.nearest_resize(label, 4, 6), expected)


def test_zero_when_student_equals_teacher():
    s, _, _ = _data((2, 3, 4, 5), seed=16, with_label=False)
    x = paddle.to_tensor(s)
    for name in DISTILL:
        assert abs(float(get_loss(name)(x, x.clone(), temperature=1.0))) < 1e-12


def test_cwd_is_not_pixelwise_kl():
    # Guards against the softmax axes being mixed up: cwd normalises over positions, kl over channels.
    s, t, _ = _data((2, 3, 4, 5), seed=17, with_label=False)
    st, tt = paddle.to_tensor(s), paddle.to_tensor(t)
    assert abs(float(get_loss("cwd")(st, tt)) - float(get_loss("kl")(st, tt))) > 1e-3
    assert abs(float(get_loss("cwd")(st, tt)) - float(get_loss("channelwise_legacy")(st, tt))) > 1e-3


# ---- cross-entropy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("ignore_frac", [0.0, 0.4])
def test_cross_entropy_value_and_gradient(weight, ignore_frac):
    rng = np.random.default_rng(21)
    logits = rng.normal(scale=2.0, size=(2, 4, 3, 5))
    label = rng.integers(0, 4, size=(2, 3, 5))
    label[rng.random(label.shape) < ignore_frac] = IGNORE
    x = paddle.to_tensor(logits, stop_gradient=False)
    loss = cross_entropy(x, paddle.to_tensor(label), ignore_index=IGNORE, weight=weight)
    assert loss.shape == []
    assert float(loss) == pytest.approx(ref.ce_ref(logits, label, IGNORE, weight), rel=1e-10)
    loss.backward()
    numeric = ref.numeric_grad(lambda z: ref.ce_ref(z, label, IGNORE, weight), logits)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)
    # float32 on paddle 3.x (where float32 * int64 promotion fails) and agreement with paddle's own loss
    x32 = paddle.to_tensor(logits.astype("float32"))
    ours32 = cross_entropy(x32, paddle.to_tensor(label[:, None]), weight=weight)
    w32 = None if weight is None else paddle.to_tensor(np.asarray(weight, dtype="float32"))
    theirs = F.cross_entropy(x32, paddle.to_tensor(label), axis=1, ignore_index=IGNORE, weight=w32)
    assert float(ours32) == pytest.approx(float(theirs), rel=1e-5)
    assert float(ours32) == pytest.approx(ref.ce_ref(logits, label, IGNORE, weight), rel=1e-5)


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("avg_non_ignore,top_k", [(False, 1.0), (True, 0.3), (False, 0.5)])
def test_cross_entropy_paddleseg_options(weight, avg_non_ignore, top_k):
    """PaddleSeg's avg_non_ignore / top_k_percent_pixels against the numpy reference, values and gradients."""
    rng = np.random.default_rng(23)
    logits = rng.normal(scale=2.0, size=(2, 4, 3, 5))
    label = rng.integers(0, 4, size=(2, 3, 5))
    label[rng.random(label.shape) < 0.3] = IGNORE

    def ref_fn(z):
        return ref.ce_options_ref(z, label, IGNORE, weight, avg_non_ignore, top_k)

    x = paddle.to_tensor(logits, stop_gradient=False)
    loss = cross_entropy(
        x,
        paddle.to_tensor(label),
        ignore_index=IGNORE,
        weight=weight,
        avg_non_ignore=avg_non_ignore,
        top_k_percent_pixels=top_k,
    )
    assert float(loss) == pytest.approx(ref_fn(logits), rel=1e-10)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), ref.numeric_grad(ref_fn, logits), rtol=1e-5, atol=1e-8)
    # the options change the value (else the test could not tell them apart)
    assert float(loss) != pytest.approx(ref.ce_ref(logits, label, IGNORE, weight), rel=1e-3)


def test_cross_entropy_all_ignored_is_zero_without_nan():
    x = paddle.to_tensor(np.random.default_rng(22).normal(size=(1, 3, 2, 2)), stop_gradient=False)
    loss = cross_entropy(x, paddle.to_tensor(np.full((1, 2, 2), IGNORE)), weight=[1.0, 2.0, 3.0])
    loss.backward()
    assert float(loss) == 0.0
    assert np.all(x.grad.numpy() == 0)


def test_cross_entropy_registered_as_ce():
    assert get_loss("ce") is cross_entropy


def test_cross_entropy_rejects_bad_labels_and_weights():
    x = paddle.zeros([1, 3, 2, 2])
    with pytest.raises(SegDistillError, match=r"\[3, 7\].*outside \[0, 3\)"):
        cross_entropy(x, paddle.to_tensor(np.array([[[0, 3], [7, 255]]])))
    with pytest.raises(SegDistillError, match="one per class"):
        cross_entropy(x, paddle.to_tensor(np.zeros((1, 2, 2), dtype="int64")), weight=[1.0, 2.0])
    with pytest.raises(SegDistillError, match="does not match"):
        cross_entropy(x, paddle.to_tensor(np.zeros((1, 4, 4), dtype="int64")))


# ---- registry and input checks ------------------------------------------------------------------------------


def test_registry_lists_and_rejects_unknown_names():
    assert set(DISTILL + ["ce"]) <= set(available())
    assert available() == sorted(available())
    with pytest.raises(SegDistillError) as err:
        get_loss("kld")
    msg = str(err.value)
    assert "'kld'" in msg and all(n in msg for n in DISTILL)


def test_register_refuses_a_second_function_under_one_name():
    with pytest.raises(ValueError, match="twice"):

        @register("kl")
        def other(student, teacher, label=None, ignore_index=255, temperature=1.0):
            return student.mean()

    assert get_loss("kl").__name__ == "kl_loss"


def test_shape_mismatch_names_the_loss_and_shapes():
    a, b = paddle.zeros([1, 3, 4, 4]), paddle.zeros([1, 3, 4, 5])
    for name in DISTILL:
        with pytest.raises(SegDistillError, match=rf"'{name}'.*\[1, 3, 4, 4\].*\[1, 3, 4, 5\]"):
            get_loss(name)(a, b)
    with pytest.raises(SegDistillError, match="NCHW"):
        get_loss("kl")(paddle.zeros([3, 4]), paddle.zeros([3, 4]))


def test_temperature_rules():
    a, b = paddle.randn([1, 2, 3, 3]), paddle.randn([1, 2, 3, 3])
    for name in ("channelwise_legacy", "mse"):
        with pytest.raises(SegDistillError, match="no temperature"):
            get_loss(name)(a, b, temperature=4.0)
    for name in ("kl", "cwd"):
        with pytest.raises(SegDistillError, match="temperature must be > 0"):
            get_loss(name)(a, b, temperature=0)


# ---- the field's methods: dist, skd_pairwise, cirkd_pixel, ifvd, mgd, kl standardize ---------------------------

KEYS3 = [[7, 1, 4, 0], [7, 1, 4, 1], [7, 1, 4, 2]]


def _generator(cin, cout, dtype, seed=0):
    """MGD's generator in `dtype`, and its parameters as numpy (w1, b1, w2, b2)."""
    from segdistill.distill.connectors import build_connector

    paddle.seed(seed)
    old = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        gen = build_connector("mgd_generator", cin, cout, "test")
    finally:
        paddle.set_default_dtype(old)
    params = (gen.conv1.weight, gen.conv1.bias, gen.conv2.weight, gen.conv2.bias)
    return gen, tuple(p.numpy().astype(np.float64) for p in params)


def _method_ref(name, s, t, label, options, gen_params=None):
    opts = dict(options)
    if name == "kl":
        standardize = opts.pop("standardize", False)
        f = ref.standardize if standardize else (lambda z: z)
        return ref.kl_ref(f(s), f(t), label, IGNORE, opts.get("temperature", 1.0))
    if name == "ifvd":
        return ref.ifvd_ref(s, t, label, IGNORE)
    if name == "mgd":
        return ref.mgd_ref(s, t, gen_params, KEYS3[: s.shape[0]], **opts)
    return {"dist": ref.dist_ref, "skd_pairwise": ref.skd_pairwise_ref, "cirkd_pixel": ref.cirkd_pixel_ref}[name](
        s, t, **opts
    )


# (loss, student shape, teacher shape, options, label?); odd and unequal H, W; channels differ where allowed
METHOD_CASES = [
    ("kl", (2, 3, 4, 5), (2, 3, 4, 5), {"standardize": True}, True),
    ("kl", (3, 4, 3, 5), (3, 4, 3, 5), {"standardize": True, "temperature": 2.0}, False),
    ("dist", (2, 3, 4, 5), (2, 3, 4, 5), {}, False),
    ("dist", (3, 4, 3, 5), (3, 4, 3, 5), {"beta": 2.0, "gamma": 0.5, "temperature": 4.0}, True),
    ("skd_pairwise", (2, 3, 5, 7), (2, 4, 5, 7), {}, False),
    ("skd_pairwise", (2, 3, 4, 5), (2, 3, 4, 5), {"pool": 1}, True),
    ("skd_pairwise", (1, 2, 7, 3), (1, 5, 7, 3), {"pool": 3}, False),
    ("cirkd_pixel", (3, 3, 3, 5), (3, 4, 3, 5), {}, False),
    ("cirkd_pixel", (2, 3, 5, 3), (2, 3, 5, 3), {"temperature": 1.0, "pool": 2}, True),
    ("ifvd", (2, 3, 4, 5), (2, 4, 4, 5), {}, True),
    ("ifvd", (3, 4, 3, 5), (3, 4, 3, 5), {}, True),
    ("mgd", (2, 3, 3, 5), (2, 4, 3, 5), {}, False),
    ("mgd", (3, 4, 5, 3), (3, 4, 5, 3), {"alpha": 0.01, "lambda_mask": 0.5}, True),
]


def _method_data(name, s_shape, t_shape, with_label, seed):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(scale=2.0, size=s_shape), rng.normal(scale=2.0, size=t_shape)
    label = None
    if with_label or name == "ifvd":
        n, _, h, w = s_shape
        label = rng.integers(0, 3, size=(n, 2 * h + 1, 2 * w - 1))  # resized to the feature size, nearest
        label[rng.random(label.shape) < 0.3] = IGNORE
    return s, t, label


def _call(name, student, teacher, label, options, gen=None):
    ctx = {"module": gen, "keys": KEYS3[: int(student.shape[0])]} if name == "mgd" else {}
    return get_loss(name)(
        student,
        teacher,
        label=None if label is None else paddle.to_tensor(label),
        ignore_index=IGNORE,
        **options,
        **ctx,
    )


@pytest.mark.parametrize("name,s_shape,t_shape,options,with_label", METHOD_CASES)
@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-4), ("float64", 1e-10)])
def test_method_value_matches_reference(name, s_shape, t_shape, options, with_label, dtype, rtol):
    s, t, label = _method_data(name, s_shape, t_shape, with_label, seed=sum(s_shape) + len(name))
    gen, params = _generator(s_shape[1], t_shape[1], dtype) if name == "mgd" else (None, None)
    expected = _method_ref(name, s, t, label, options, params)
    out = _call(name, paddle.to_tensor(s.astype(dtype)), paddle.to_tensor(t.astype(dtype)), label, options, gen)
    assert out.shape == [] and str(out.dtype).endswith(dtype)
    assert abs(expected) > 1e-6  # not a comparison of two zeros
    assert float(out) == pytest.approx(expected, rel=rtol, abs=1e-12)


@pytest.mark.parametrize("name,s_shape,t_shape,options,with_label", METHOD_CASES)
def test_method_gradient_matches_finite_differences(name, s_shape, t_shape, options, with_label):
    s, t, label = _method_data(name, s_shape, t_shape, with_label, seed=3 + len(name))
    gen, params = _generator(s_shape[1], t_shape[1], "float64") if name == "mgd" else (None, None)
    student = paddle.to_tensor(s, stop_gradient=False)
    teacher = paddle.to_tensor(t, stop_gradient=False)
    _call(name, student, teacher, label, options, gen).backward()
    numeric = ref.numeric_grad(lambda x: _method_ref(name, x, t, label, options, params), s)
    assert np.abs(numeric).max() > 1e-6
    np.testing.assert_allclose(student.grad.numpy(), numeric, rtol=1e-5, atol=1e-9)
    assert teacher.grad is None
    if gen is not None:  # the generator trains
        assert float(gen.conv1.weight.grad.abs().sum()) > 0


def test_ifvd_ignored_pixels_change_nothing_and_all_ignored_is_zero():
    s, t, label = _method_data("ifvd", (2, 3, 4, 5), (2, 3, 4, 5), True, seed=5)
    label = label[:, :4, :5]  # at the feature size, so "ignored" is per feature pixel
    ignored = label == IGNORE
    assert ignored.any() and (~ignored).any()
    student = paddle.to_tensor(s, stop_gradient=False)
    value = _call("ifvd", student, paddle.to_tensor(t), label, {})
    value.backward()
    grad = student.grad.numpy().transpose(0, 2, 3, 1)
    assert np.all(grad[ignored] == 0) and np.abs(grad[~ignored]).max() > 0
    s2 = s.copy().transpose(0, 2, 3, 1)
    s2[ignored] += 10.0
    moved = _call("ifvd", paddle.to_tensor(s2.transpose(0, 3, 1, 2)), paddle.to_tensor(t), label, {})
    assert float(moved) == pytest.approx(float(value), rel=1e-12)
    student = paddle.to_tensor(s, stop_gradient=False)
    zero = _call("ifvd", student, paddle.to_tensor(t), np.full_like(label, IGNORE), {})
    zero.backward()
    assert float(zero) == 0.0 and np.all(np.isfinite(student.grad.numpy()))
    with pytest.raises(SegDistillError, match="'ifvd' needs the label"):
        get_loss("ifvd")(paddle.to_tensor(s), paddle.to_tensor(t))


def test_kl_standardize_ignores_each_pixels_logit_scale_and_shift():
    s, t, label = _data((2, 3, 4, 5), seed=21)
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 3.0, size=(2, 1, 4, 5))
    shift = rng.normal(size=(2, 1, 4, 5))
    kl = get_loss("kl")
    a = kl(paddle.to_tensor(s), paddle.to_tensor(t), label=paddle.to_tensor(label), standardize=True)
    b = kl(paddle.to_tensor(s * scale + shift), paddle.to_tensor(t), label=paddle.to_tensor(label), standardize=True)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    plain = kl(paddle.to_tensor(s * scale + shift), paddle.to_tensor(t), label=paddle.to_tensor(label))
    assert float(plain) != pytest.approx(float(a), rel=1e-2)  # without it the scale matters


def test_mgd_mask_is_keyed_and_drops_its_ratio():
    from segdistill.losses.mgd import mgd_mask

    a = mgd_mask([[1, 2, 3]] * 2 + [[1, 2, 4]], 64, 64, 0.75)
    assert a.shape == (3, 1, 64, 64) and set(np.unique(a)) == {0.0, 1.0}
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], a[2])  # the key decides, nothing else
    assert 1 - a.mean() == pytest.approx(0.75, abs=0.02)
    s, t, _ = _method_data("mgd", (3, 4, 5, 3), (3, 4, 5, 3), False, seed=1)
    s, t = s.astype("float32"), t.astype("float32")
    gen, _ = _generator(4, 4, "float32")
    mgd = get_loss("mgd")
    other = [[9, 9, 9, i] for i in range(3)]
    one = mgd(paddle.to_tensor(s), paddle.to_tensor(t), module=gen, keys=KEYS3)
    again = mgd(paddle.to_tensor(s), paddle.to_tensor(t), module=gen, keys=KEYS3)
    moved = mgd(paddle.to_tensor(s), paddle.to_tensor(t), module=gen, keys=other)
    assert float(one) == float(again) != float(moved)
    with pytest.raises(SegDistillError, match="needs its generator"):
        mgd(paddle.to_tensor(s), paddle.to_tensor(t))
    with pytest.raises(SegDistillError, match=r"lambda_mask must be in \[0, 1\)"):
        mgd(paddle.to_tensor(s), paddle.to_tensor(t), module=gen, keys=KEYS3, lambda_mask=1.0)


def test_methods_registered_with_their_options():
    from segdistill.losses import options

    assert options("dist") == {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}
    assert options("skd_pairwise") == {"pool": 2}
    assert options("cirkd_pixel") == {"temperature": 0.1, "pool": 1}
    assert options("ifvd") == {}
    assert options("mgd") == {"alpha": 2e-5, "lambda_mask": 0.75}  # module, keys: context, not options
    assert options("kl") == {"temperature": 1.0, "standardize": False}
    with pytest.raises(SegDistillError, match="pool must be a whole number"):
        get_loss("skd_pairwise")(paddle.zeros([1, 2, 3, 3]), paddle.zeros([1, 2, 3, 3]), pool=1.5)
    with pytest.raises(SegDistillError, match=r"'skd_pairwise'.*\[1, 2, 3, 3\].*\[1, 2, 3, 4\]"):
        get_loss("skd_pairwise")(paddle.zeros([1, 2, 3, 3]), paddle.zeros([1, 2, 3, 4]))
    with pytest.raises(SegDistillError, match="channels differ|differs"):
        get_loss("dist")(paddle.zeros([1, 2, 3, 3]), paddle.zeros([1, 3, 3, 3]))


def test_check_options_refuses_unknown_names_and_wrong_types():
    from segdistill.losses import check_options

    assert check_options("dist", {"beta": 2}, "t") == {"beta": 2}
    with pytest.raises(SegDistillError) as err:
        check_options("dist", {"betta": 2}, "distill.terms[0] (term 'x').options")
    msg = str(err.value)
    assert "distill.terms[0] (term 'x').options" in msg and "'betta'" in msg and "did you mean beta" in msg
    assert all(k in msg for k in ("beta (default 1.0)", "gamma", "temperature"))
    assert check_options("mgd", {"alpha": "2e-5"}, "t") == {"alpha": 2e-5}  # PyYAML reads 2e-5 as a string
    with pytest.raises(SegDistillError, match="must be a float"):
        check_options("mgd", {"alpha": "small"}, "t")
    with pytest.raises(SegDistillError, match="must be a bool"):
        check_options("kl", {"standardize": "yes"}, "t")
    with pytest.raises(SegDistillError, match="has no option 'module'"):
        check_options("mgd", {"module": None}, "t")
