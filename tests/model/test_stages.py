"""predict = prepare -> forward -> maps: each stage on its own gives what predict gives, batches of several
requests forwarded together give what each gives alone, and frames keep their own map size."""

from __future__ import annotations

import numpy as np
import pytest

from model import GridScores, PreparedBatch, create_detector
from tests.helpers.images import pil, textured_part, with_defect


@pytest.fixture(scope="module")
def refs(tiny_detector):
    return tiny_detector.fit_references([pil(textured_part(s)) for s in (1, 2)])


def frames() -> list:
    defect, _ = with_defect(textured_part(7), 60, 80, 40)
    return [pil(textured_part(5)), pil(defect), pil(textured_part(6, size=300)[:200])]  # the last 300 x 200


def assert_same(first, second) -> None:
    for a, b in zip(first, second, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-6)


def test_the_three_stages_give_what_predict_gives(tiny_detector, refs):
    batch = tiny_detector.prepare(frames(), refs)
    assert isinstance(batch, PreparedBatch) and len(batch) == 3 and "preprocess" in batch.timings_ms
    scores = tiny_detector.forward(batch, refs)
    assert isinstance(scores, GridScores) and scores.raw_scores.shape == (3,)
    assert {"dino", "bank_search", "heads"} <= set(scores.timings_ms)
    staged = tiny_detector.maps(batch, scores)
    assert [p.anomaly_map.shape for p in staged] == [(224, 224), (224, 224), (200, 300)]
    assert_same(staged, tiny_detector.predict(frames(), refs))


def test_requests_forwarded_together_give_what_each_gives_alone(tiny_detector, refs):
    """The engine merges the prepared frames of several requests into one forward and splits the scores back."""
    first, second = tiny_detector.prepare(frames()[:1], refs), tiny_detector.prepare(frames()[1:], refs)
    together = tiny_detector.forward(PreparedBatch.merged([first, second]), refs)
    apart = [tiny_detector.maps(b, tiny_detector.forward(b, refs)) for b in (first, second)]
    merged = PreparedBatch.merged([first, second])
    back = [tiny_detector.maps(merged.sliced(i, i + 1), together.sliced(i, i + 1))[0] for i in range(3)]
    assert_same(back, [*apart[0], *apart[1]])


def test_tiled_mode_runs_the_same_stages(refs):
    tiled = create_detector("tiny", device="cpu", inference={"tiles": 2})
    tiled_refs = tiled.fit_references([pil(textured_part(s)) for s in (1, 2)])
    batch = tiled.prepare(frames(), tiled_refs)
    assert [f.dino.shape[0] for f in batch.frames] == [4, 4, 4] and batch.frames[2].tiles is not None
    staged = tiled.maps(batch, tiled.forward(batch, tiled_refs))
    assert [p.anomaly_map.shape for p in staged] == [(224, 224), (224, 224), (200, 300)]
    assert_same(staged, tiled.predict(frames(), tiled_refs))
