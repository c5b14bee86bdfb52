"""pipelines/words_eval.py: the custom-words evaluation runs the library's transcription on its street audio."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pipelines"))

import words_eval  # noqa: E402

from drsn_asr import load_model  # noqa: E402


@pytest.mark.skipif(not (words_eval.SHARED / "fsdd" / "recordings").is_dir(), reason="needs ../shared/data")
def test_long_street_transcribes_its_audio_and_counts_what_fired():
    model = load_model("default", device="cpu")
    low = words_eval.long_street(model, minutes=0.5, seed=5, threshold=0.3)
    high = words_eval.long_street(model, minutes=0.5, seed=5, threshold=0.99)
    assert low["audio_s"] == high["audio_s"] == 30.0
    assert set(low["labels"]) <= set(model.labels)
    assert low["false_accepts_per_hour"] == pytest.approx(low["false_accepts"] / 30.0 * 3600, abs=0.01)
    assert high["false_accepts"] <= low["false_accepts"]  # a stricter threshold never fires more on the same audio
