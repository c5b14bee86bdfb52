import pytest

from drsn_asr.runtime.config import FeatureConfig, ModelConfig, DetectorConfig, from_dict, load_yaml, to_dict


def test_round_trip():
    cfg = ModelConfig(block="drsn_cs", stage_channels=(8, 16), stage_blocks=(1, 2), stage_strides=(1, 2))
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"model\.n_layers"):
        from_dict(ModelConfig, {"n_layers": 3}, prefix="model")


def test_wrong_type_is_named():
    with pytest.raises(ValueError, match="n_mels"):
        from_dict(FeatureConfig, {"n_mels": "forty"})
    with pytest.raises(ValueError, match="stage_channels"):
        from_dict(ModelConfig, {"stage_channels": 32})
    with pytest.raises(ValueError, match="n_mels"):
        from_dict(FeatureConfig, {"n_mels": True})


def test_int_accepted_where_float_expected_and_dicts_checked():
    assert from_dict(FeatureConfig, {"hop_ms": 10}).hop_ms == 10.0
    d = from_dict(DetectorConfig, {"thresholds": {"stop": 0.8}})
    assert d.thresholds == {"stop": 0.8}
    with pytest.raises(ValueError, match="thresholds.stop"):
        from_dict(DetectorConfig, {"thresholds": {"stop": "high"}})


def test_yaml_is_safe_loaded(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception, match="could not determine a constructor|python/object"):
        load_yaml(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(p)


def test_shipped_configs_parse():
    from pathlib import Path

    from drsn_asr.training.train import load_train_config

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    from drsn_asr.training.custom import load_words_config

    train_configs = [p for p in configs if p.name != "corpus.yaml" and not p.name.startswith("words_")]
    assert train_configs
    for path in train_configs:
        cfg = load_train_config(path)
        assert cfg.model.block in ("drsn_cw", "drsn_cs", "resnet", "se_resnet")
    words_configs = [p for p in configs if p.name.startswith("words_")]
    assert words_configs
    for path in words_configs:
        assert load_words_config(path).phrases
