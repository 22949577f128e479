import json
import logging

import pytest

from mbert_retrieval import hub


def _offline(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: False)

    def no_snapshot(name, revision=None, local_files_only=False):
        assert local_files_only, "offline resolution must not try the network"
        raise FileNotFoundError(f"{name} is not in the cache")

    monkeypatch.setattr(hub, "snapshot", no_snapshot)


def test_default_model_falls_back_offline_and_says_so(monkeypatch, caplog):
    _offline(monkeypatch)
    caplog.set_level(logging.WARNING, logger="mbert_retrieval.hub")  # the CLI tests quieten this logger
    resolved = hub.resolve_model(None, "dense")
    assert resolved.fallback and resolved.requested == hub.DEFAULT_MODELS["dense"]
    assert (hub.Path(resolved.path) / "modules.json").is_file()
    assert "falling back" in resolved.message and "falling back" in caplog.text


def test_explicit_hub_model_does_not_silently_fall_back(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(RuntimeError, match="unreachable"):
        hub.resolve_model("someone/some-model", "dense")


def test_local_paths(tmp_path):
    assert hub.resolve_model(str(tmp_path)).path == str(tmp_path)
    with pytest.raises(FileNotFoundError):
        hub.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        hub.resolve_model(None, "sparse")


def test_offline_env_means_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False


def test_detect_kind(tmp_path, minilm_path):
    assert hub.detect_kind(minilm_path) == "dense"
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "pylate.models.Dense.Dense", "path": "1_Dense"}]))
    assert hub.detect_kind(tmp_path) == "colbert"


def test_load_model_fallback_gives_a_real_ranking(monkeypatch):
    _offline(monkeypatch)
    model = hub.load_model()
    assert model.kind == "dense" and model.model_id == hub.FALLBACK_MODEL_ID and model.resolved.fallback
    q = model.encode_queries(["capital of France"])
    d = model.encode_documents(["Bananas are yellow.", "Paris is the capital of France."])
    assert (q @ d.T).argmax() == 1
