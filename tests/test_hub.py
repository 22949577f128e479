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


@pytest.mark.parametrize("name", ["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"])
def test_fallback_model_ids_resolve_to_the_packaged_files_offline(monkeypatch, minilm_path, name):
    """The id an index built with the fallback records (and ST's short name) loads offline, uncached."""
    _offline(monkeypatch)
    resolved = hub.resolve_model(name, "dense")
    assert resolved.path == minilm_path and not resolved.fallback
    assert resolved.requested == hub.FALLBACK_MODEL_ID
    model = hub.load_model(name, kind="dense")
    assert model.model_id == hub.FALLBACK_MODEL_ID and not model.resolved.fallback


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_default_model_named_explicitly_does_not_fall_back(monkeypatch, kind):
    """Only the default (no name) may fall back: naming the default's id is an explicit choice."""
    _offline(monkeypatch)
    with pytest.raises(RuntimeError, match="could not load model .*not cached and the hub is unreachable"):
        hub.resolve_model(hub.DEFAULT_MODELS[kind], kind)
    with pytest.raises(RuntimeError, match="could not load model"):
        hub.load_model(hub.DEFAULT_MODELS[kind], kind=kind)


def test_index_built_offline_with_the_fallback_reopens_by_its_id(monkeypatch, tmp_path):
    from mbert_retrieval import Retriever

    _offline(monkeypatch)
    docs = [{"id": "a", "text": "Paris is the capital of France."}, {"id": "b", "text": "Bananas are yellow."}]
    with Retriever.build(tmp_path / "idx", docs) as built:
        assert built.model.model_id == hub.FALLBACK_MODEL_ID
    for name in (hub.FALLBACK_MODEL_ID, "all-MiniLM-L6-v2"):
        with Retriever.open(tmp_path / "idx", model=name) as r:
            assert r.search("capital of France", k=1)[0].id == "a"
    with pytest.raises(RuntimeError, match="could not load model"):
        Retriever.open(tmp_path / "idx", model=hub.DEFAULT_MODELS["dense"])
