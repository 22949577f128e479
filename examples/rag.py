"""Retrieval-augmented generation with `Retriever`: retrieve passages for a question, then format a prompt.

No language model is called: the prompt is printed, ready to send to the LLM of your choice.

    python examples/rag.py                                   # a few built-in questions
    python examples/rag.py "why do browned foods taste good?" --k 2
    python examples/rag.py "what happened in 1989?" --filter topic=history --hybrid

The first run builds an index of examples/data/corpus.jsonl under indexes/example-rag (git-ignored);
later runs reopen it (the model recorded in the index is reloaded, offline included).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from mbert_retrieval.retriever import Result, Retriever  # also exported as `from mbert_retrieval import Retriever`

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "corpus.jsonl"
DEFAULT_INDEX = HERE.parent / "indexes" / "example-rag"

PROMPT = """You are a helpful assistant. Answer the question using only the numbered sources below.
Cite the sources you use like [1]. If the sources do not contain the answer, say so.

Sources:
{sources}

Question: {question}
Answer:"""

QUESTIONS = [
    "How do plants turn sunlight into food?",
    "How long should I boil an egg if I want a runny yolk?",
    "Why is it a good idea to start saving money early?",
]


def format_sources(results: list[Result], max_chars: int = 600) -> str:
    """Numbered passages with their title and id, each cut to `max_chars`."""
    blocks = []
    for i, r in enumerate(results, start=1):
        text = r.text if len(r.text) <= max_chars else r.text[: max_chars].rsplit(" ", 1)[0] + " ..."
        blocks.append(f"[{i}] {r.title or r.id} (id: {r.id})\n{textwrap.fill(text, 100)}")
    return "\n\n".join(blocks)


def build_prompt(question: str, results: list[Result]) -> str:
    return PROMPT.format(sources=format_sources(results), question=question)


def open_or_build(index: Path, model: str | None, hybrid: bool) -> Retriever:
    if (index / "manifest.json").exists():
        return Retriever.open(index, model=model, hybrid=hybrid or None)
    print(f"building {index} from {CORPUS} ...")
    retriever = Retriever.build(index, CORPUS, model=model, hybrid=hybrid)
    if retriever.fallback_message:
        print(f"note: {retriever.fallback_message}")
    return retriever


def parse_filter(items: list[str]) -> dict | None:
    """`field=value` pairs (values read as JSON when possible: numbers, lists)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("questions", nargs="*", help="questions (default: a few examples)")
    ap.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="index folder (built on first use)")
    ap.add_argument("--model", default=None, help="model for a new index (default: the library default)")
    ap.add_argument("--k", type=int, default=3, help="passages per question")
    ap.add_argument("--hybrid", action="store_true", help="fuse dense results with BM25")
    ap.add_argument("--filter", action="append", default=[], help="metadata filter field=value (repeatable)")
    args = ap.parse_args()

    with open_or_build(args.index, args.model, args.hybrid) as retriever:
        for question in args.questions or QUESTIONS:
            results = retriever.search(question, k=args.k, filter=parse_filter(args.filter))
            print("=" * 100)
            print(build_prompt(question, results))
            # an LLM call would go here, e.g. answer = llm.generate(prompt)


if __name__ == "__main__":
    main()
