"""Decoding: both modes against a step-by-step restatement of PaddleOCR's loop; the charset."""

import numpy as np
import pytest

from spinrec.charset import EOS_INDEX, SOS_INDEX, SPIN_DICT, Charset
from spinrec.decoding import decode


def _paddle_loop(probs, classes):
    """AttnLabelDecode.decode as PaddleOCR runs it for SPIN: skip sos/eos, never stop."""
    out = []
    for row in probs:
        idx, conf = row.argmax(-1), row.max(-1)
        chars = [(classes[i], c) for i, c in zip(idx, conf) if i not in (SOS_INDEX, EOS_INDEX)]
        text = "".join(ch for ch, _ in chars)
        out.append((text, float(np.mean([c for _, c in chars])) if chars else float("nan")))
    return out


def _probs_for(tokens, rng, classes=70, peak=0.9):
    p = rng.uniform(0, 1, (len(tokens), classes)).astype(np.float32)
    p[np.arange(len(tokens)), tokens] = 0
    p = p / p.sum(-1, keepdims=True) * (1 - peak)
    p[np.arange(len(tokens)), tokens] = peak - rng.uniform(0, 0.3, len(tokens))
    return p


def test_charset_order():
    cs = Charset()
    assert len(SPIN_DICT) == 68 and cs.num_classes == 70
    assert cs.classes[:2] == ("sos", "eos")
    assert cs.classes[2:12] == tuple("0123456789") and cs.classes[12] == "a" and cs.classes[37] == "z"
    assert cs.classes[38:46] == (":", "(", "'", "-", ",", "%", ">", ".") and cs.classes[69] == "^"


def test_charset_file_roundtrip(tmp_path):
    path = tmp_path / "spin_dict.txt"
    Charset().to_file(path)
    assert path.stat().st_size == 135  # 68 lines, no final newline, as PaddleOCR's file
    assert Charset.from_file(path) == Charset()


def test_label_encoding():
    cs = Charset()
    label = cs.encode("Ab-1 é")
    assert label.tolist()[:7] == [0, 12, 13, 41, 3, 1, 0] and label.shape == (27,)
    assert cs.encode("") is None and cs.encode("é ") is None and cs.encode("x" * 26) is None
    assert cs.encode("x" * 25) is not None
    assert cs.filter_text("Hello World!") == "helloworld!"


def test_paddle_mode_matches_paddles_loop():
    rng = np.random.default_rng(0)
    rows = [
        [12, 13, 1, 14, 1, 1] + [1] * 20,  # tokens after eos are kept by PaddleOCR
        [0, 15, 16, 17] + [1] * 22,  # sos is skipped
        [1] * 26,  # nothing kept -> NaN
        list(rng.integers(2, 70, 26)),  # no eos at all
    ]
    probs = np.stack([_probs_for(r, rng) for r in rows])
    got = decode(probs, stop_at_eos=False)
    for reading, (text, conf) in zip(got, _paddle_loop(probs, Charset().classes)):
        assert reading.text == text
        if np.isnan(conf):
            assert np.isnan(reading.confidence) and reading.char_probs.size == 0
        else:
            assert reading.confidence == pytest.approx(conf, abs=1e-6)
            assert len(reading.char_probs) == len(text)


def test_stop_at_eos_mode():
    rng = np.random.default_rng(1)
    rows = [[12, 13, 1, 14] + [1] * 22, [1] * 26, [0, 15, 1, 16] + [1] * 22, list(range(2, 28))]
    probs = np.stack([_probs_for(r, rng) for r in rows])
    got = decode(probs, stop_at_eos=True)
    assert [r.text for r in got] == ["ab", "", "d", "".join(Charset().classes[2:28])]
    assert got[1].confidence == 0.0
    assert got[0].confidence == pytest.approx(float(probs[0, [0, 1], [12, 13]].mean()), abs=1e-6)
    np.testing.assert_allclose(got[2].char_probs, [probs[2, 1, 15]])


def test_decode_accepts_fewer_steps():
    rng = np.random.default_rng(2)
    probs = np.stack([_probs_for([20, 21, 1], rng)])
    assert decode(probs)[0].text == "ij"
