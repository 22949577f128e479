"""Long-document windows: spans that fit the model, cut at structure, overlapping only on hard cuts."""

import pytest
from transformers import AutoTokenizer

from mbert_retrieval.windows import WindowConfig, split_windows, structure_boundaries, window_spans


@pytest.fixture(scope="module")
def tok(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


def _n_tokens(tok, text):
    return len(tok(text, add_special_tokens=True)["input_ids"])


def test_short_text_is_one_window(tok):
    assert split_windows(["a short text"], tok, WindowConfig(tokens=64), max_length=512) == [[(0, 12)]]


def test_windows_cover_the_text_and_fit_the_model(tok):
    text = " ".join(f"word{i} is here." for i in range(400))
    (spans,) = split_windows([text], tok, WindowConfig(tokens=64, overlap=8), max_length=512)
    assert len(spans) > 5
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (_s0, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 <= e0, "no gap between consecutive windows"
    for s, e in spans:
        assert _n_tokens(tok, text[s:e]) <= 64 + 2  # re-tokenised span: at most a boundary token more


def test_markdown_cuts_at_headings(tok):
    sections = [f"# Section {i}\n\n" + " ".join(["filler text"] * 20) + "\n\n" for i in range(6)]
    text = "".join(sections)
    (spans,) = split_windows([text], tok, WindowConfig(tokens=120, overlap=16), max_length=512)
    assert len(spans) >= 2
    for s, _ in spans[1:]:
        assert text[s:].startswith("# Section"), repr(text[s : s + 30])


def test_python_code_cuts_at_functions(tok):
    funcs = [f"def function_{i}(x):\n" + "".join(f"    x = x + {j}\n" for j in range(12)) + "    return x\n\n" for i in range(8)]
    text = "import os\n\n" + "".join(funcs)
    (spans,) = split_windows([text], tok, WindowConfig(tokens=160, overlap=16), max_length=512, kinds=["py"])
    assert len(spans) >= 2
    for s, _ in spans[1:]:
        assert text[s:].startswith("def function_"), repr(text[s : s + 30])


def test_hard_cut_overlaps_by_tokens():
    offsets = [(i * 2, i * 2 + 1) for i in range(100)]  # 100 one-char tokens, no structure
    spans = window_spans(offsets, 200, tokens=40, overlap=10)
    assert spans[0] == (0, 80)
    assert spans[1][0] == offsets[30][0]  # 40 - 10: the second window starts 10 tokens before the cut


def test_structure_disabled_gives_token_windows(tok):
    text = "# A\n\n" + "x " * 60 + "\n\n# B\n\n" + "y " * 300
    (spans,) = split_windows([text], tok, WindowConfig(tokens=100, overlap=0, structure="none"), max_length=512)
    (structured,) = split_windows([text], tok, WindowConfig(tokens=100, overlap=0), max_length=512)
    assert any(text[s:].startswith("# B") for s, _ in structured)
    assert spans != structured


def test_boundaries_priorities():
    text = "# Title\n\nfirst paragraph. Second sentence.\n\n## Sub\ncode"
    cuts = dict(structure_boundaries(text, "markdown"))
    assert cuts[text.index("## Sub")] > cuts[text.index("Second")]


@pytest.mark.parametrize("kw", [{"tokens": 4}, {"tokens": 64, "overlap": 40}, {"structure": "ast"}])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        WindowConfig(**kw)


def test_window_setting_from_a_manifest_value():
    assert WindowConfig.from_value(None) is None and WindowConfig.from_value(False) is None
    assert WindowConfig.from_value(True) == WindowConfig()
    cfg = WindowConfig(tokens=128, overlap=16, structure="none")
    assert WindowConfig.from_value(cfg.to_dict()) == cfg and WindowConfig.from_value(cfg) is cfg
    with pytest.raises(ValueError, match="unknown window settings"):
        WindowConfig.from_value({"size": 3})
    with pytest.raises(ValueError, match="tokens must be an integer"):
        WindowConfig.from_value({"tokens": "64"})
    with pytest.raises(ValueError, match="WindowConfig, a dict"):
        WindowConfig.from_value(64)


def test_structure_hint_from_document_metadata():
    from mbert_retrieval.windows import structure_hint

    assert structure_hint({"path": "docs/guide.md"}) == "md"
    assert structure_hint({"path": "src/app.py", "language": "python"}) == "py"
    assert structure_hint({"path": "lib/x.rb", "language": "ruby"}) == "rb"
    assert structure_hint({"path": "notes.txt"}) == "auto"
    assert structure_hint({"language": "python"}) == "py" and structure_hint({"language": "kotlin"}) == "code"
    assert structure_hint(None) == "auto" and structure_hint({"path": 3}) == "auto"


def test_model_window_limit_leaves_room_for_prompt_and_marker(minilm_path):
    from types import SimpleNamespace

    from mbert_retrieval.windows import model_window_limit

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    encoder = SimpleNamespace(tokenizer=tokenizer, config=SimpleNamespace(max_length=512))
    _, plain = model_window_limit(SimpleNamespace(encoder=encoder, config=SimpleNamespace(document_prompt="")))
    _, prompted = model_window_limit(SimpleNamespace(encoder=encoder, config=SimpleNamespace(document_prompt="search document: ")))
    assert plain < 512 and prompted == plain - len(tokenizer("search document: ", add_special_tokens=False)["input_ids"])
    colbert = SimpleNamespace(encoder=encoder, config=SimpleNamespace(document_length=300, document_prefix="[D] "))
    margin = 512 - plain
    assert 0 < margin < 8 and model_window_limit(colbert)[1] == 300 - 1 - margin  # document_length, less [D] and the margin
    with pytest.raises(ValueError, match="tokenizer"):
        model_window_limit(SimpleNamespace())


def test_check_spans_names_the_document():
    from mbert_retrieval.windows import check_spans

    assert check_spans("d", [(0, 2), [2, 5]], 5) == [(0, 2), (2, 5)]
    for bad in ([], [(0, 6)], [(3, 3)], [(0, 1, 2)], "0-2", [(0.0, 1)]):
        with pytest.raises(ValueError, match="document 'd'"):
            check_spans("d", bad, 5)
