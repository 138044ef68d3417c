"""Fidelity to PaddleOCR, checked against Paddle itself.

Model: ``reference/spin_paddle.py`` is SPIN written in Paddle dygraph from PaddleOCR's own
source, read function by function (each class names the upstream file, function and commit it mirrors;
nothing in it comes from ``spinrec`` or from a note). In particular its TPS lattice is upstream's
``GridGenerator.build_P_paddle``: ``I_r_size = (32, 100)`` read as (height, width), x varying fastest,
output pixel (i, j) sampling (x_j, y_i). Its parameters and BatchNorm statistics are randomized, it is
saved with ``paddle.save`` (a real Paddle-written ``.pdparams``: LSTM alias keys and parameter-name table
included), converted with ``spinrec.weights.convert_paddle``, and every stage of the PyTorch port is fed
the stage input Paddle saw. Tolerance: relative error ``||out - ref|| / ||ref|| <= 1e-5`` in float32.

The one exception is the rectified image as a whole (localisation + SPN + TPS + grid_sample from the
same input image). PaddleOCR's fp32 TPS grid ``P_hat @ (inv(Delta) @ C')`` cancels terms of size ~100 to
produce coordinates of size ~1, so it carries ~1e-5 of rounding noise that any last-bit change of the
fiducials re-draws; grid_sample multiplies coordinate noise by the image gradient (50 px per unit).
PaddleOCR therefore differs from *itself* by ~1e-4 (noise images) when 1% of the input pixels move by
one float32 ulp. That part is checked in pieces at 1e-5 (localisation outputs; SPN; the grid from the same
fiducials; SPN + grid_sample from the same localisation outputs and grid) and as a whole against that
measured self-sensitivity of PaddleOCR (within 3x of it, and < 1e-3). The SPN alone is also
ill-conditioned when arbitrary curve weights nearly cancel (the instance norm then divides by a tiny
spread); with such weights it is checked against PaddleOCR's own distance to a float64 evaluation.

Served path: the same model with a raised eos logit (so the two decoding modes read differently) is saved
by Paddle, converted, and built into a model repository by the real builder (which must accept it). Read in
process (``Pipeline`` on PyTorch) it gives PaddleOCR's strings in both decoding modes. Its
exported encoder, run by ONNX Runtime and by OpenVINO as the CPU server runs it, gives features within 3x
PaddleOCR's own 1-ulp sensitivity of PaddleOCR's neck output and, with the repository's decoder,
PaddleOCR's strings in both modes; a real tritonserver on that repository gives them too (one server,
``spin_decoder`` reloaded with ``stop_at_eos`` false through Triton's model-control API).

Pre/post-processing: PaddleOCR's own ``SPINLabelDecode``, ``SPINLabelEncode``, ``SPINRecResizeImg``,
``resize_norm_img_spin`` and ``spin_dict.txt``, run from the installed ``paddleocr==2.7.3`` wheel (see
``reference/ppocr_wheel.py``).

Needs ``paddlepaddle`` (and ``paddleocr==2.7.3 --no-deps`` + ``shapely`` for the pre/post-processing
tests); skipped with a reason otherwise.
"""

from __future__ import annotations

import math
import pickle
import warnings

import cv2
import numpy as np
import pytest

paddle = pytest.importorskip("paddle", reason="paddlepaddle is not installed (pip install paddlepaddle==3.3.1)")
import paddle.nn.functional as PF  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

from reference import ppocr_wheel  # noqa: E402
from reference.spin_paddle import SPINPaddle, cal_k, randomize_  # noqa: E402

from spinrec import weights as W  # noqa: E402
from spinrec.models.blend import power_exponents  # noqa: E402
from spinrec.charset import SPIN_DICT, Charset  # noqa: E402
from spinrec.decoding import decode  # noqa: E402
from spinrec.preprocess import preprocess  # noqa: E402

TOL = 1e-5
needs_wheel = pytest.mark.skipif(
    ppocr_wheel.root() is None, reason="paddleocr==2.7.3 is not installed (pip install --no-deps paddleocr==2.7.3)"
)


def rel(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def assert_close(what: str, out, ref, tol: float = TOL) -> None:
    err = rel(out, ref)
    print(f"{what}: relative error {err:.2e} (tolerance {tol:.0e})")
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"


def pt(a: np.ndarray):
    return paddle.to_tensor(np.ascontiguousarray(a))


def th(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def word_crops(rng: np.random.RandomState, n: int) -> np.ndarray:
    """Random text-like crops (random words, fonts, colours, sizes, noise), preprocessed to [n, 1, 32, 100]."""
    out = []
    for _ in range(n):
        h, w = rng.randint(20, 64), rng.randint(60, 260)
        bg = rng.randint(0, 256, 3)
        img = np.empty((h, w, 3), np.uint8)
        img[:] = bg
        text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), rng.randint(2, 9)))
        colour = tuple(int(c) for c in 255 - bg)
        cv2.putText(img, text, (int(rng.randint(0, 10)), int(h * 0.75)), int(rng.randint(0, 8)), h / 40, colour, int(rng.randint(1, 3)))
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        out.append(preprocess(img))
    return np.stack(out)


def localisation(model: SPINPaddle, x: np.ndarray) -> list[np.ndarray]:
    """Paddle's (curve weights, offsets, gate, fiducials) in the port's shapes: upstream keeps the curve
    weights as [B, 13, 1] and the gate as [B, 1, 1, 1], the port as [B, 13] and [B]."""
    w, off, gate, c = (t.numpy() for t in model.transform.localize(pt(x)))
    return [w[..., 0], off, gate.reshape(-1), c]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Random Paddle model, its Paddle-written checkpoint, the converted port, and Paddle's stage outputs."""
    paddle.seed(0)
    model = SPINPaddle()
    model.eval()
    randomize_(model, seed=20, generator_scale=8.0, seq_gain=3.0)  # seed: 5 different readings, top-2 log-ratio >= 0.036
    tmp = tmp_path_factory.mktemp("paddle_ckpt")
    pdparams = tmp / "random.pdparams"
    paddle.save(model.state_dict(), str(pdparams))
    port = W.convert_paddle(pdparams, tmp / "random.safetensors")

    rng = np.random.RandomState(7)
    noise = rng.uniform(-1.0, 1.0, (2, 1, 32, 100)).astype(np.float32)
    x = np.concatenate([noise, word_crops(rng, 3)]).astype(np.float32)
    with paddle.no_grad():
        loc = localisation(model, x)
        rectified = model.transform(pt(x)).numpy()
        features = model.backbone(pt(rectified)).numpy()
        sequence = model.neck(pt(features)).numpy()
        probs = model.head(pt(sequence)).numpy()  # = model(x): the stages chained are the whole pipeline
    return dict(
        model=model, port=port, pdparams=pdparams, dir=tmp, x=x, loc=loc, rectified=rectified,
        features=features, sequence=sequence, probs=probs,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ the reference itself


def test_reference_matches_published_structure(ref):
    """The Paddle reference built as upstream builds it has 255 state-dict entries (16 LSTM aliases),
    50,686,693 parameters and 27,808 BatchNorm statistics, and the port's 13 SPIN exponents are upstream's
    ``cal_K(6)``, which starts 0.03, 33.33 and ends 1.52, 1.0."""
    model = ref["model"]
    state = model.state_dict()
    assert len(state) == 255
    assert sum(".cell_fw." in k or ".cell_bw." in k for k in state) == 16
    unique = {}
    for name, p in model.named_parameters():
        unique.setdefault(id(p), (name, int(np.prod(p.shape))))
    stats = sum(n for name, n in unique.values() if name.endswith(("_mean", "_variance")))
    assert sum(n for _, n in unique.values()) - stats == 50_686_693
    assert stats == 27_808
    betas = cal_k(6)
    assert len(betas) == 13 and betas[:2] == [0.03, 33.33] and betas[-2:] == [1.52, 1.0]
    assert power_exponents(6) == betas


def test_checkpoint_is_paddle_written_and_randomized(ref):
    """``paddle.save`` wrote the file (name table, LSTM aliases); every tensor is random and non-trivial."""
    with open(ref["pdparams"], "rb") as f:
        raw = pickle.load(f)
    assert W.PADDLE_NAME_TABLE in raw and len(raw) == 256
    arrays = W.read_pdparams(ref["pdparams"])
    assert len(arrays) == 255
    np.testing.assert_array_equal(
        arrays["neck.encoder.encoder.1.rnn.weight_hh_l0_reverse"], arrays["neck.encoder.encoder.1.rnn.0.cell_bw.weight_hh"]
    )
    for k, v in arrays.items():
        assert v.dtype == np.float32, k
        assert np.all(np.isfinite(v)), k
        if v.size > 1:
            assert np.std(v) > 0, f"{k} is constant"
        if k.endswith("_variance"):
            assert v.min() > 0.4, k
    assert np.abs(arrays["transform.GridGenerator.fc.weight"]).min() > 0  # the "always zero" TPS rows are on
    gate = ref["loc"][2]
    assert np.all((gate > 0.05) & (gate < 0.95)), "AIN gate should be open"
    base = ref["loc"][3].mean(axis=0)
    assert np.abs(ref["loc"][3] - base).max() > 0.05, "fiducials should depend on the image"


# ------------------------------------------------------------------------------------------ stages, paddle -> port


def test_localisation_outputs(ref):
    """Curve weights, offsets (sigmoid), AIN gate, fiducials from the same image."""
    with torch.no_grad():
        ours = [t.numpy() for t in ref["port"].transform.predict(th(ref["x"]))]
    for name, o, r in zip(("weights", "offsets", "gate", "fiducials"), ours, ref["loc"]):
        assert_close(f"localisation {name}", o, r)


def _spn_float64(x, weights, offsets_up, gate, scale, bias, betas):
    """SPN + AIN in float64 NumPy (upstream ``SP_TransformerNetwork.forward``), from the upsampled offsets."""
    i = (x.astype(np.float64) + 1) / 2
    a = gate.astype(np.float64).reshape(-1, 1, 1, 1)
    i = i * (1 - a) + offsets_up.astype(np.float64) * a
    s = sum(weights[:, k].astype(np.float64).reshape(-1, 1, 1, 1) * i ** b for k, b in enumerate(betas))
    mean = s.mean(axis=(2, 3), keepdims=True)
    var = s.var(axis=(2, 3), keepdims=True)
    n = (s - mean) / np.sqrt(var + 1e-5) * float(scale[0]) + float(bias[0])
    return 2 / (1 + np.exp(-n)) - 1


@pytest.mark.parametrize("curves", ["checkpoint", "arbitrary"])
def test_spn_blend_same_inputs(ref, curves):
    """SPN + AIN (upsampled offsets, gate blend, 13 power curves, affine instance norm) from identical inputs.

    ``checkpoint``: the model's curve weights (a monotone curve): within 1e-5. ``arbitrary``: N(0, 1)
    curve weights, which can nearly cancel; the instance norm then divides by a spread ~100x smaller than
    the mean and PaddleOCR itself is ~1e-5 away from exact arithmetic, so the port must be within 1e-5 or
    within 3x PaddleOCR's own distance to a float64 evaluation.
    """
    model, port = ref["model"], ref["port"]
    w, off, gate, _ = ref["loc"]
    if curves == "arbitrary":
        w = np.random.RandomState(9).normal(0.0, 1.0, w.shape).astype(np.float32)
    with paddle.no_grad():
        up = PF.upsample(pt(off), size=(32, 100), mode="bilinear")
        expected = model.transform.sp_net(pt(ref["x"]), pt(w).unsqueeze(-1), up, pt(gate).reshape([-1, 1, 1, 1])).numpy()
        norm = model.transform.sp_net.bn
        exact = _spn_float64(ref["x"], w, up.numpy(), gate, norm.scale.numpy(), norm.bias.numpy(), cal_k(6))
    with torch.no_grad():
        got = port.transform.sp_net(th(ref["x"]), th(w), th(off), th(gate)).numpy()
    err, paddle_err = rel(got, expected), rel(expected, exact)
    print(f"SPN ({curves} curves): port vs Paddle {err:.2e}; Paddle vs float64 {paddle_err:.2e}; port vs float64 {rel(got, exact):.2e}")
    assert paddle_err < 1e-3  # the float64 re-derivation agrees with Paddle: same formula
    if curves == "checkpoint":
        assert err <= TOL
    else:
        assert err <= max(TOL, 3 * paddle_err)


def test_tps_grid_same_fiducials(ref):
    """The TPS grid (upstream's natural 32x100 lattice, x fastest; fc extra rows) from identical fiducials."""
    model, port = ref["model"], ref["port"]
    c = ref["loc"][3]
    with paddle.no_grad():
        expected = model.transform.GridGenerator(pt(c), (32, 100)).numpy().reshape(-1, 32, 100, 2)
    with torch.no_grad():
        got = port.transform.GridGenerator(th(c)).numpy()
    assert_close("TPS grid, same fiducials", got, expected)


def test_rectified_image_same_localisation(ref, monkeypatch):
    """spinrec's transform forward (SPN, grid_sample) given PaddleOCR's localisation outputs and grid."""
    model, port = ref["model"], ref["port"]
    w, off, gate, c = ref["loc"]
    with paddle.no_grad():
        grid = model.transform.GridGenerator(pt(c), (32, 100)).numpy().reshape(-1, 32, 100, 2)
    monkeypatch.setattr(port.transform, "predict", lambda x: (th(w), th(off), th(gate), th(c)))
    monkeypatch.setattr(port.transform.GridGenerator, "forward", lambda c_prime: th(grid))
    with torch.no_grad():
        got = port.transform(th(ref["x"])).numpy()
    assert_close("rectified image, same localisation outputs and grid", got, ref["rectified"])


def test_rectified_image_same_input(ref):
    """The whole transform from the same image, against PaddleOCR's own fp32 self-sensitivity.

    ``floor``: how far PaddleOCR's rectified image moves when 1% of the input pixels move up by one float32
    ulp. The port must be within 3x of it, and below 1e-3 (a wrong lattice, ``align_corners=False`` or a
    non-affine norm give errors of order 0.1 to 1).
    """
    model, port, x = ref["model"], ref["port"], ref["x"]
    with torch.no_grad():
        got = port.transform(th(x)).numpy()
    nudged = np.where(np.random.RandomState(3).rand(*x.shape) < 0.01, np.nextafter(x, np.float32(2)), x)
    with paddle.no_grad():
        moved = model.transform(pt(nudged.astype(np.float32))).numpy()
    floor = rel(moved, ref["rectified"])
    err = rel(got, ref["rectified"])
    print(f"rectified image: port vs Paddle {err:.2e}; Paddle vs Paddle with 1-ulp nudges {floor:.2e}")
    assert err <= max(TOL, 3 * floor)
    assert err < 1e-3


def test_backbone_same_input(ref):
    with torch.no_grad():
        got = ref["port"].backbone(th(ref["rectified"])).numpy()
    assert_close("backbone features", got, ref["features"])


def test_neck_same_input(ref):
    with torch.no_grad():
        got = ref["port"].neck(th(ref["features"])).numpy()
    assert_close("neck features", got, ref["sequence"])


def test_head_same_input(ref):
    """26 greedy steps from the same sequence features; the argmax is never a near-tie."""
    probs = ref["probs"]
    top2 = np.sort(probs, axis=-1)[..., -2:]
    assert np.log(top2[..., 1] / top2[..., 0]).min() > 1e-3, "near-tie in the reference: change the seeds"
    with torch.no_grad():
        got = ref["port"].head(th(ref["sequence"])).numpy()
    assert got.shape == (5, 26, 70)
    assert_close("head probabilities", got, probs)
    np.testing.assert_array_equal(got.argmax(-1), probs.argmax(-1))


@pytest.mark.parametrize("eos_boost", [0.0, None])
def test_head_stop_at_eos_is_a_prefix(ref, eos_boost):
    """Stop-at-eos mode runs the same steps as PaddleOCR and stops once every row has emitted eos.

    ``None``: the eos logit bias is raised (in both models) just enough for every row to emit eos at
    some step of the original readings, so that the loop really stops early."""
    model, port = ref["model"], ref["port"]
    bias_p = model.head.generator.bias
    saved = bias_p.numpy().copy()
    if eos_boost is None:
        logits = np.log(ref["probs"])  # log-softmax: the logit gaps are preserved
        gap = (logits.max(-1) - logits[..., 1]).min(axis=1)  # per row, the step where eos is closest
        eos_boost = float(gap.max()) + 0.05
    try:
        if eos_boost:
            new = saved.copy()
            new[1] += eos_boost
            bias_p.set_value(new)
            with torch.no_grad():
                port.head.generator.bias[1] += eos_boost
            with paddle.no_grad():
                probs = model.head(pt(ref["sequence"])).numpy()
        else:
            probs = ref["probs"]
        with torch.no_grad():
            got = port.head(th(ref["sequence"]), stop_at_eos=True).numpy()
    finally:
        bias_p.set_value(saved)
        with torch.no_grad():
            port.head.generator.bias.copy_(th(saved))
    ids = probs.argmax(-1)
    seen = np.cumsum(ids == 1, axis=1) > 0
    steps = int(np.argmax(seen.all(axis=0))) + 1 if seen.all(axis=0).any() else 26
    if eos_boost:
        assert steps < 26, "the eos boost did not make every row emit eos"
    assert got.shape[1] == steps
    assert_close(f"head probabilities, stop at eos ({steps} steps)", got, probs[:, :steps])
    assert [r.text for r in decode(got)] == [r.text for r in decode(probs)]


def test_end_to_end_tokens(ref):
    """Whole pipeline in each framework from the same image: identical greedy tokens and texts."""
    with torch.no_grad():
        got = ref["port"](th(ref["x"])).numpy()
    top2 = np.sort(ref["probs"], axis=-1)[..., -2:]
    margin = float(np.log(top2[..., 1] / top2[..., 0]).min())
    err = rel(got, ref["probs"])
    print(f"end-to-end probabilities: port vs Paddle {err:.2e}; smallest top-2 log-ratio {margin:.2e}")
    ids = ref["probs"].argmax(-1)
    np.testing.assert_array_equal(got.argmax(-1), ids)
    assert margin > 5 * err, "near-tie in the reference relative to the end-to-end error: change the seeds"
    assert len({tuple(r) for r in ids}) > 1, "all images decode alike: the random model is too input-blind"
    ours = decode(got, stop_at_eos=False)
    theirs = decode(ref["probs"], stop_at_eos=False)
    assert [r.text for r in ours] == [r.text for r in theirs]
    if ppocr_wheel.root() is not None:
        spin = ppocr_wheel.rec_postprocess().SPINLabelDecode(character_dict_path=ppocr_wheel.spin_dict_path())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            paddleocr = spin(ref["probs"])
        assert [r.text for r in ours] == [t for t, _ in paddleocr]
        for r, (_, conf) in zip(ours, paddleocr):
            assert r.confidence == pytest.approx(conf, abs=1e-3, nan_ok=True)


# ------------------------------------------------------------------------------------------ port -> paddle


def test_to_paddle_reproduces_paddle_outputs(ref):
    """``to_paddle`` of the converted port gives back Paddle's key set and values; written with
    ``write_pdparams``, read by ``paddle.load`` and loaded into a fresh Paddle model with ``set_state_dict``,
    it reproduces the original Paddle outputs exactly."""
    arrays = W.to_paddle(ref["port"])
    original = {k: v.numpy() for k, v in ref["model"].state_dict().items()}
    assert set(arrays) == set(original)
    for k, v in original.items():
        assert arrays[k].shape == v.shape, k
        np.testing.assert_array_equal(arrays[k], v, err_msg=k)
    path = ref["dir"] / "from_port.pdparams"
    W.write_pdparams(arrays, path)
    loaded = paddle.load(str(path))
    assert set(loaded) == set(original)
    paddle.seed(1)
    fresh = SPINPaddle()
    fresh.eval()
    missing, unexpected = fresh.set_state_dict(loaded)
    assert not missing and not unexpected
    x = ref["x"][:2]
    with paddle.no_grad():
        rectified = fresh.transform(pt(x))
        np.testing.assert_array_equal(rectified.numpy(), ref["rectified"][:2])
        probs = fresh.head(fresh.neck(fresh.backbone(rectified)))
        np.testing.assert_array_equal(probs.numpy(), ref["probs"][:2])


def test_torch_random_port_to_paddle():
    """A port with its own random weights (PyTorch side), exported with ``to_paddle``: Paddle agrees on the
    stages that do not pass through the TPS grid (small config for speed)."""
    from spinrec.models import SPIN, SPINConfig

    torch.manual_seed(5)
    cfg = SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 48), head_hidden_size=32)
    port = SPIN(cfg).eval()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, p in port.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = 4.0 if name.startswith("head.generator") else 1.0
            p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(fan_in))
        for name, b in port.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    model = SPINPaddle(backbone_out=64, neck_hidden=32, neck_out=(32, 48), head_hidden=32)
    model.eval()
    missing, unexpected = model.set_state_dict({k: pt(v) for k, v in W.to_paddle(port).items()})
    assert not missing and not unexpected
    x = np.random.RandomState(8).uniform(-1, 1, (2, 1, 32, 100)).astype(np.float32)
    with torch.no_grad():
        loc = [t.numpy() for t in port.transform.predict(th(x))]
        feats = port.backbone(th(x)).numpy()
        seq = port.neck(th(feats)).numpy()
        probs = port.head(th(seq)).numpy()
    with paddle.no_grad():
        for name, o, r in zip(("weights", "offsets", "gate", "fiducials"), localisation(model, x), loc):
            assert_close(f"port->paddle localisation {name}", o, r)
        assert_close("port->paddle backbone", model.backbone(pt(x)).numpy(), feats)
        assert_close("port->paddle neck", model.neck(pt(feats)).numpy(), seq)
        ref_probs = model.head(pt(seq)).numpy()
    assert_close("port->paddle head", probs, ref_probs)


# ------------------------------------------------------------------------------------------ PaddleOCR pre/post-processing


@needs_wheel
def test_charset_is_spin_dict():
    path = ppocr_wheel.spin_dict_path()
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == 135
    assert tuple(data.decode("utf-8").split("\n")) == SPIN_DICT
    assert Charset.from_file(path).classes == Charset().classes
    decoder = ppocr_wheel.rec_postprocess().SPINLabelDecode(character_dict_path=path, use_space_char=False)
    assert tuple(decoder.character) == Charset().classes
    encoder = ppocr_wheel.label_ops().SPINLabelEncode(max_text_length=25, character_dict_path=path)
    assert tuple(encoder.character) == Charset().classes


def _random_probs(rng: np.random.RandomState, ids: np.ndarray) -> np.ndarray:
    """Softmax probabilities [B, T, 70] whose argmax is ``ids``, with random confidences."""
    logits = rng.normal(0.0, 1.0, ids.shape + (70,))
    np.put_along_axis(logits, ids[..., None], logits.max(-1, keepdims=True) + rng.uniform(0.01, 4.0, ids.shape + (1,)), -1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _decode_cases(rng: np.random.RandomState) -> np.ndarray:
    b, t = 40, 26
    ids = rng.randint(2, 70, (b, t))
    for i in range(b):
        kind = i % 8
        if kind == 0:  # eos then more characters (PaddleOCR keeps them)
            ids[i, rng.randint(1, t - 1)] = 1
        elif kind == 1:  # all eos
            ids[i] = 1
        elif kind == 2:  # all sos
            ids[i] = 0
        elif kind == 3:  # sos / eos sprinkled
            ids[i, rng.rand(t) < 0.3] = 0
            ids[i, rng.rand(t) < 0.3] = 1
        elif kind == 4:  # a normal word then eos padding
            ids[i, rng.randint(1, t) :] = 1
        elif kind == 5:  # eos first, characters after
            ids[i, 0] = 1
        elif kind == 6:  # eos only at the end
            ids[i, -1] = 1
        # kind 7: no eos at all
    return ids


@needs_wheel
def test_spin_label_decode_matches_paddleocr():
    """``decode(stop_at_eos=False)`` == PaddleOCR ``SPINLabelDecode`` (texts, confidences, NaN for empty)."""
    spin = ppocr_wheel.rec_postprocess().SPINLabelDecode(character_dict_path=ppocr_wheel.spin_dict_path())
    rng = np.random.RandomState(11)
    for trial in range(3):
        ids = _decode_cases(rng)
        probs = _random_probs(rng, ids)
        assert (probs.argmax(-1) == ids).all()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # np.mean([]) for the empty readings
            theirs = spin(pt(probs) if trial == 0 else probs)  # it accepts paddle tensors and arrays
        ours = decode(probs, stop_at_eos=False)
        assert len(ours) == len(theirs)
        for r, (text, conf) in zip(ours, theirs):
            assert r.text == text
            if math.isnan(conf):
                assert math.isnan(r.confidence), text
            else:
                assert abs(r.confidence - conf) <= 1e-6
    assert any(math.isnan(c) for _, c in theirs)


def paddleocr_readings(probs: np.ndarray, stop_at_eos: bool) -> list[tuple[str, float]]:
    """PaddleOCR's ``SPINLabelDecode`` (from the wheel) of ``probs``; with ``stop_at_eos``, applied to each
    row's steps before its first eos, an empty reading then having confidence 0 (the serving mode's rule)."""
    spin = ppocr_wheel.rec_postprocess().SPINLabelDecode(character_dict_path=ppocr_wheel.spin_dict_path())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # np.mean([]) for the empty readings
        if not stop_at_eos:
            return [(t, float(c)) for t, c in spin(probs)]
        out = []
        for row in probs:
            eos = np.flatnonzero(row.argmax(-1) == 1)
            end = int(eos[0]) if eos.size else row.shape[0]
            ((text, conf),) = spin(row[None, :end]) if end else [("", float("nan"))]
            out.append((text, 0.0 if math.isnan(conf) else float(conf)))
        return out


def assert_same_readings(what: str, ours, theirs: list[tuple[str, float]], conf_tol: float) -> None:
    """Texts identical; confidences within ``conf_tol`` (NaN where PaddleOCR's is NaN)."""
    texts, confidences = [r[0] for r in ours], [r[1] for r in ours]
    print(f"{what}: {texts}")
    assert texts == [t for t, _ in theirs], what
    for got, (_, want) in zip(confidences, theirs):
        if math.isnan(want):
            assert math.isnan(got), what
        else:
            assert abs(got - want) <= conf_tol, (what, got, want)


@needs_wheel
def test_stop_at_eos_matches_paddleocr_on_the_prefix():
    """``decode(stop_at_eos=True)`` == PaddleOCR's decoder applied to the steps before the first eos
    (confidence 0 instead of NaN when nothing is kept)."""
    rng = np.random.RandomState(12)
    probs = _random_probs(rng, _decode_cases(rng))
    ours = [(r.text, r.confidence) for r in decode(probs, stop_at_eos=True)]
    assert_same_readings("stop at eos", ours, paddleocr_readings(probs, stop_at_eos=True), 1e-6)


def _random_images(rng: np.random.RandomState):
    sizes = [(1, 1), (1, 7), (9, 1), (2, 3), (32, 100), (31, 99), (33, 101), (16, 50), (64, 200), (48, 37),
             (100, 32), (17, 250), (120, 640), (5, 400), (400, 5), (61, 97)]  # fmt: skip
    for i, (h, w) in enumerate(sizes):
        for channels in (None, 3, 4):
            shape = (h, w) if channels is None else (h, w, channels)
            if i % 2:  # smooth content as well as noise
                img = cv2.resize(rng.randint(0, 256, (max(1, h // 4), max(1, w // 4)) + shape[2:], dtype=np.uint8), (w, h))
                img = img.reshape(shape)
            else:
                img = rng.randint(0, 256, shape, dtype=np.uint8)
            yield f"{h}x{w}x{channels or 1}", img


@needs_wheel
def test_preprocess_matches_resize_norm_img_spin():
    """``preprocess`` is bit-identical to PaddleOCR's inference preprocessing (predict_rec
    ``resize_norm_img_spin``) on the BGR image PaddleOCR would read (cv2 IMREAD_COLOR), for gray, BGR and
    BGRA inputs given as arrays or as encoded PNG / JPEG / BMP bytes."""
    theirs_fn = ppocr_wheel.resize_norm_img_spin()
    rng = np.random.RandomState(13)
    count = 0
    for name, img in _random_images(rng):
        for ext in (".png", ".bmp", ".jpg"):
            if ext != ".png" and img.ndim == 3 and img.shape[2] == 4:
                continue  # BMP/JPEG writers drop or reject alpha; PNG keeps it
            ok, buf = cv2.imencode(ext, img)
            assert ok, (name, ext)
            data = buf.tobytes()
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # what PaddleOCR reads
            theirs = theirs_fn(bgr)
            assert theirs.dtype == np.float32 and theirs.shape == (1, 32, 100)
            np.testing.assert_array_equal(preprocess(data), theirs, err_msg=f"{name} {ext} bytes")
            if ext == ".png":  # lossless: the array itself is the same picture
                np.testing.assert_array_equal(preprocess(img), theirs, err_msg=f"{name} array")
            count += 1
        if img.ndim == 3:  # PaddleOCR's function also takes the array directly (BGR2GRAY drops alpha)
            np.testing.assert_array_equal(preprocess(img), theirs_fn(img), err_msg=f"{name} direct")
    assert count > 100


@needs_wheel
def test_preprocess_matches_spin_rec_resize_img():
    """Training-time ``SPINRecResizeImg`` (config: image_shape [100, 32], interpolation 2, mean/std 127.5):
    same values. Its scale is a NumPy float64 *scalar*: with NumPy 1.x value-based casting the multiply
    runs in float32 and the result is bit-identical; NumPy 2 would multiply in float64 and round, so up
    to one float32 ulp is allowed there."""
    op = ppocr_wheel.rec_img_aug().SPINRecResizeImg(image_shape=[100, 32], interpolation=2, mean=[127.5], std=[127.5])
    rng = np.random.RandomState(14)
    worst = 0
    for name, img in _random_images(rng):
        bgr = img if img.ndim == 3 and img.shape[2] == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if img.ndim == 2 else cv2.COLOR_BGRA2BGR)
        theirs = op({"image": bgr})["image"]
        ours = preprocess(img)
        assert theirs.shape == ours.shape == (1, 32, 100), name
        ulps = np.abs(ours.view(np.int32).astype(np.int64) - theirs.astype(np.float32).view(np.int32).astype(np.int64))
        worst = max(worst, int(ulps.max()))
    assert worst <= (0 if np.lib.NumpyVersion(np.__version__) < "2.0.0" else 1)


def _label_cases(rng: np.random.RandomState) -> list[str]:
    alphabet = list("abcXYZ019 ,.!?:;'\"-_()[]{}<>@#$%^&*+=/\\|~`é€中\t") + list(SPIN_DICT)
    cases = ["", " ", "a", "A", "Hello, World!", "   ", "中文", "x" * 25, "x" * 26, "Y" * 25 + "!", "é" * 3 + "e"]
    for _ in range(300):
        cases.append("".join(rng.choice(alphabet, rng.randint(0, 30))))
    return cases


@needs_wheel
def test_label_encode_matches_paddleocr():
    """``Charset.encode`` == ``SPINLabelEncode`` (lowercase, drop unknown, skip empty / too long)."""
    op = ppocr_wheel.label_ops().SPINLabelEncode(max_text_length=25, character_dict_path=ppocr_wheel.spin_dict_path())
    charset = Charset()
    rng = np.random.RandomState(15)
    skipped = kept = 0
    for text in _label_cases(rng):
        theirs = op({"label": text})
        ours = charset.encode(text, max_length=25)
        if theirs is None:
            assert ours is None, repr(text)
            skipped += 1
            continue
        assert ours is not None, repr(text)
        np.testing.assert_array_equal(ours, theirs["label"], err_msg=repr(text))
        assert ours.dtype == theirs["label"].dtype
        n = int(theirs["length"])
        assert ours[n + 1] == 1 and (ours[1 : n + 1] >= 2).all()
        kept += 1
    assert skipped > 5 and kept > 100


# ------------------------------------------------------------------------------------------ served: ONNX / OpenVINO / Triton


@pytest.fixture(scope="module")
def served(ref, tmp_path_factory):
    """A Paddle-written checkpoint converted and built into a model repository by the real builder, six
    word images (PNG) with PaddleOCR's probabilities and neck features for them, and PaddleOCR's own
    feature noise on them (1-ulp nudges to 1 % of the pixels).

    The checkpoint is the reference model with its eos logit raised by 1.75, so that the two decoding
    modes read differently (one word has characters after its first eos; two readings are empty:
    confidence NaN in PaddleOCR's mode, 0 in the serving mode)."""
    from conftest import build_repository

    images = png_words(np.random.RandomState(19), 6)  # 5 different readings, top-2 log-ratio >= 0.034
    x = np.stack([preprocess(data) for data in images])
    nudged = np.where(np.random.RandomState(4).rand(*x.shape) < 0.01, np.nextafter(x, np.float32(2)), x).astype(np.float32)
    model = ref["model"]
    bias = model.head.generator.bias
    saved = bias.numpy().copy()
    boosted = saved.copy()
    boosted[1] += 1.75
    tmp = tmp_path_factory.mktemp("paddle_served")
    try:
        bias.set_value(boosted)
        paddle.save(model.state_dict(), str(tmp / "eos.pdparams"))
        with paddle.no_grad():
            sequence = model.neck(model.backbone(model.transform(pt(x)))).numpy()
            moved = model.neck(model.backbone(model.transform(pt(nudged)))).numpy()
            probs = model.head(pt(sequence)).numpy()
    finally:
        bias.set_value(saved)
    W.convert_paddle(tmp / "eos.pdparams", tmp / "eos.safetensors")
    top2 = np.sort(probs, axis=-1)[..., -2:]
    assert np.log(top2[..., 1] / top2[..., 0]).min() > 1e-2, "near-tie in the reference: change the seeds"
    exact, stopped = (paddleocr_readings(probs, mode) for mode in (False, True))
    assert len({t for t, _ in exact}) > 1, "all images read alike"
    assert exact != stopped and any(t == "" for t, _ in exact), "the two decoding modes should read differently"
    repository = build_repository(tmp / "repository", tmp / "eos.safetensors")
    return dict(images=images, x=x, probs=probs, sequence=sequence, floor=rel(moved, sequence), repository=repository)


def png_words(rng: np.random.RandomState, n: int) -> list[bytes]:
    """Rendered words as PNG bytes (random words, fonts, sizes), as a client would send them."""
    out = []
    for _ in range(n):
        h, w = rng.randint(28, 56), rng.randint(90, 220)
        img = np.full((h, w, 3), 255, np.uint8)
        text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), rng.randint(3, 8)))
        cv2.putText(img, text, (4, int(h * 0.75)), int(rng.randint(0, 8)), h / 40, (30, 20, 10), 2)
        ok, data = cv2.imencode(".png", img)
        assert ok
        out.append(data.tobytes())
    return out


@needs_wheel
def test_in_process_pipeline_gives_paddleocr_readings(served):
    """The converted checkpoint read in process (``Pipeline`` on PyTorch, as ``spinrec recognize`` reads)
    from the PNG bytes: PaddleOCR's strings and confidences in both decoding modes."""
    from spinrec.pipeline import Pipeline

    for stop_at_eos in (False, True):
        readings = Pipeline.from_repository(served["repository"], runtime="torch", stop_at_eos=stop_at_eos).recognize(served["images"])
        assert_same_readings(
            f"in process, stop_at_eos={stop_at_eos}", [(r.text, r.confidence) for r in readings],
            paddleocr_readings(served["probs"], stop_at_eos), 1e-3,
        )  # fmt: skip


@needs_wheel
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_served_encoder_gives_paddleocr_readings(served, runtime):
    """The exported encoder as the CPU server runs it (ONNX Runtime or OpenVINO, fp32) and the NumPy
    decoder of the built repository: features within 3x PaddleOCR's own float32 noise (1-ulp nudges to
    1 % of the pixels) of PaddleOCR's neck output, and PaddleOCR's decoded strings in both modes."""
    from spinrec.contract import CHECKPOINT, ONNX
    from spinrec.decoder import HeadDecoder
    from spinrec.runtime import open_encoder

    features = open_encoder(runtime, served["repository"] / ONNX, 1)(served["x"])
    err, floor = rel(features, served["sequence"]), served["floor"]
    print(f"{runtime} features vs PaddleOCR {err:.2e}; PaddleOCR vs itself with 1-ulp nudges {floor:.2e}")
    assert err <= max(TOL, 3 * floor)
    for stop_at_eos in (False, True):
        readings = HeadDecoder(served["repository"] / CHECKPOINT, stop_at_eos=stop_at_eos)(features)
        assert_same_readings(
            f"{runtime}, stop_at_eos={stop_at_eos}", [(r.text, r.confidence) for r in readings],
            paddleocr_readings(served["probs"], stop_at_eos), 1e-3,
        )


@needs_wheel
def test_triton_server_gives_paddleocr_readings(served, tmp_path):
    """A real tritonserver on the repository built from the Paddle-written checkpoint: the served default
    (``stop_at_eos`` true) and, after reloading ``spin_decoder`` with ``stop_at_eos`` false through
    Triton's model-control API, PaddleOCR's exact mode: PaddleOCR's strings and confidences."""
    import json

    from conftest import _stop, start_triton
    from test_serving_server import infer

    server = start_triton(served["repository"], tmp_path / "server.log", ("--model-control-mode=explicit", "--load-model=*"))
    try:
        texts, confidences, _ = infer(server, "http", served["images"])
        assert_same_readings("triton, stop_at_eos=True", list(zip(texts, confidences)), paddleocr_readings(served["probs"], True), 1e-3)
        with server.client() as client:
            config = client.get_model_config("spin_decoder")
            assert config["parameters"]["stop_at_eos"]["string_value"] == "true"
            config["parameters"]["stop_at_eos"]["string_value"] = "false"
            client.load_model("spin_decoder", config=json.dumps(config))
        texts, confidences, _ = infer(server, "grpc", served["images"])
        assert_same_readings("triton, stop_at_eos=False", list(zip(texts, confidences)), paddleocr_readings(served["probs"], False), 1e-3)
    finally:
        _stop(server.process)
