"""pipelines/stream_eval.py's scoring: hits, substitutions, misses and false alarms (on sentences / on noise)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pipelines"))

from build_demo import make_recording  # noqa: E402
from stream_eval import best_point, score  # noqa: E402

from drsn_asr.runtime.audio import write_audio  # noqa: E402
from drsn_asr.training.data import Example  # noqa: E402

from drsn_asr.runtime.stream import Detection  # noqa: E402

TRUTH = [
    {"label": "yes", "start_s": 1.0, "end_s": 1.5},
    {"label": "_unknown_", "start_s": 4.0, "end_s": 6.0},
    {"label": "stop", "start_s": 8.0, "end_s": 8.4},
    {"label": "go", "start_s": 11.0, "end_s": 11.3},
]


def test_score_counts_each_kind_of_outcome():
    detections = [
        (Detection("yes", 0.9, 1.05, 1.45), 1.6),   # hit, 0.1 s after the word
        (Detection("yes", 0.8, 1.1, 1.4), 1.7),     # a second detection of the same word: nothing left to match
        (Detection("no", 0.7, 4.8, 5.2), 5.3),      # on the sentence: a false alarm on speech
        (Detection("go", 0.7, 8.0, 8.4), 8.5),      # wrong label on "stop": a substitution
        (Detection("up", 0.7, 14.0, 14.3), 14.4),   # far from everything: a false alarm on noise
    ]
    r = score(detections, TRUTH, duration_s=18.0, tolerance_s=0.75)
    assert (r["n_keywords"], r["hits"], r["substitutions"], r["misses"]) == (3, 1, 1, 1)
    assert (r["false_alarms"], r["false_alarms_on_sentences"], r["false_alarms_on_noise"]) == (3, 1, 2)
    assert r["recall"] == round(1 / 3, 4) and r["false_alarms_per_hour"] == 600.0
    assert r["latency_s_median"] == 0.1
    # F1: precision 1 hit of 5 detections, recall 1 of 3 keywords → 2PR / (P + R) = 0.25
    assert r["f1"] == 0.25


def test_a_validation_recording_labels_other_words_unknown_and_can_leave_sirens_out(tmp_path):
    import numpy as np

    t = np.arange(8000) / 16000
    paths = {}
    for name, hz in (("yes", 500), ("stock", 900)):
        paths[name] = tmp_path / f"{name}.wav"
        write_audio(paths[name], (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
    keyword = Example(str(paths["yes"]), "yes", "flite/kal", "tts")
    other = Example(str(paths["stock"]), "stock", "flite/kal", "tts")
    recordings = {}
    for sirens in (True, False):
        audio, truth = make_recording([keyword], [], np.random.default_rng(0), others=[other], sirens=sirens)
        assert sorted((w["label"], w["speaker"]) for w in truth) == [("_unknown_", "flite/kal"), ("yes", "flite/kal")]
        recordings[sirens] = audio
    # the speech is laid out first (same length); without sirens the street differs
    assert len(recordings[True]) == len(recordings[False])
    assert not np.allclose(recordings[True], recordings[False])


def test_the_best_point_is_the_top_f1_then_the_cheapest_hop_then_the_fewest_alarms():
    curve = [
        {"hop_ms": 50.0, "threshold": 0.6, "f1": 0.80},
        {"hop_ms": 50.0, "threshold": 0.8, "f1": 0.86},
        {"hop_ms": 80.0, "threshold": 0.7, "f1": 0.852},  # within 0.01 of the top, longer hop: chosen
        {"hop_ms": 80.0, "threshold": 0.8, "f1": 0.84},   # longer hop too, but more than 0.01 below the top
        {"hop_ms": 100.0, "threshold": 0.9, "f1": 0.70},
    ]
    assert best_point(curve) == curve[2]
    assert best_point(curve, f1_tolerance=0.0) == curve[1]


def test_validation_speech_takes_half_its_keywords_from_real_validation_speakers(tmp_path):
    import numpy as np

    from build_demo import validation_speech

    tone = (0.3 * np.sin(2 * np.pi * 500 * np.arange(8000) / 16000)).astype(np.float32)
    corpus, fsdd = tmp_path / "corpus", tmp_path / "fsdd"
    rows = ["path,word,engine,voice,rate,pitch,licence,duration_s"]
    for word in ("yes", "one", "stock"):
        for voice in range(20):
            (corpus / word).mkdir(parents=True, exist_ok=True)
            write_audio(corpus / word / f"v{voice}.wav", tone)
            rows.append(f"{word}/v{voice}.wav,{word},synth,v{voice},1,1,CC0,0.5")
    (corpus / "manifest.csv").write_text("\n".join(rows) + "\n")
    fsdd.mkdir()
    for speaker in ("lucas", "jackson"):
        for take in range(6):
            write_audio(fsdd / f"1_{speaker}_{take}.wav", tone, 8000)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data:
  vocabulary: ["yes", "one"]
  tts_dir: {corpus}
  fsdd_dir: {fsdd}
  fsdd_train_speakers: [jackson]
  fsdd_validation_speakers: [lucas]
  sentences_dir: null
  validation_voice_fraction: 0.5
  test_voice_fraction: 0.0
""")
    words, others, sentences = validation_speech(np.random.default_rng(0), 8, 2, 0, recipe=recipe)
    real = [w for w in words if w.source == "fsdd"]
    assert len(real) == 4 and {w.group for w in real} == {"lucas"}
    assert all(w.word in ("yes", "one") for w in words) and len({w.path for w in words}) == 8
    assert [w.word for w in others] == ["stock", "stock"] and sentences == []
    assert words != sorted(words, key=lambda w: w.source)  # real and synthetic keywords interleave
    synthetic_only, _, _ = validation_speech(np.random.default_rng(0), 8, 2, 0, recipe=recipe, real_share=0.0)
    assert all(w.source == "tts" for w in synthetic_only)
