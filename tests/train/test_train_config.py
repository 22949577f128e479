import json

import pytest

from mbert_retrieval.train import ConfigError, TrainConfig, load_config


def test_json_toml_yaml_and_overrides(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model": "m", "data": ["a.jsonl"], "lr": 1e-4, "kind": "colbert"}))
    cfg = TrainConfig.from_file(tmp_path / "c.json", ["lr=3e-5", "matryoshka_dims=none", "save_steps=10"])
    assert cfg.lr == 3e-5 and cfg.kind == "colbert" and cfg.save_steps == 10 and cfg.data == ["a.jsonl"]
    assert cfg.resolved_temperature == 1.0
    (tmp_path / "c.toml").write_text('[train]\nmodel = "m"\ndata = "x"\nmatryoshka_dims = [64, 32]\nbf16 = false\n')
    cfg = TrainConfig.from_file(tmp_path / "c.toml", {"batch_size": 8})
    assert cfg.matryoshka_dims == [64, 32] and cfg.data == ["x"] and cfg.batch_size == 8 and cfg.bf16 is False
    assert cfg.resolved_temperature == 0.05
    (tmp_path / "c.yaml").write_text("model: m\nepochs: 2\nresume: 'true'\n")
    cfg = load_config(tmp_path / "c.yaml", ["data=a,b", "mini-batch-size=4"])
    assert cfg.epochs == 2 and cfg.resume is True and cfg.data == ["a", "b"] and cfg.mini_batch_size == 4


@pytest.mark.parametrize("content,field", [
    ({"lrr": 1}, "lrr"),  # unknown key
    ({"lr": "fast"}, "lr"),  # wrong type
    ({"epochs": 1.5}, "epochs"),
    ({"kind": "sparse"}, "kind"),
    ({"batch_size": 0}, "batch_size"),
    ({"loss": "distill"}, "n_hard_negatives"),
    ({"matryoshka_dims": [64], "kind": "colbert"}, "matryoshka_dims"),
    ({"resume": "maybe"}, "resume"),
])
def test_errors_name_field_and_file(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_file(path)
    assert err.value.field == field and repr(field) in str(err.value) and str(path) in str(err.value)


def test_unparseable_and_missing_files(tmp_path):
    (tmp_path / "bad.toml").write_text("model = \n")
    with pytest.raises(ConfigError, match="bad.toml.*cannot parse"):
        TrainConfig.from_file(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_file(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["lr"])
