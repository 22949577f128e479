"""`mbret`: the command line of mbert-retrieval (index, search, maintain and serve index folders; train,
evaluate, benchmark). Commands live in `write_cmds`, `index_cmds` and `model_cmds`; shared helpers in `_common`."""

from __future__ import annotations

import os

import typer

from ._common import EXIT_CODES_HELP, setup_logging
from .index_cmds import info_cmd, search_cmd, serve_cmd
from .model_cmds import bench_cmd, eval_cmd, mine_cmd, train_cmd
from .write_cmds import add_cmd, compact_cmd, delete_cmd, index_cmd

__all__ = ["app", "main"]

EXAMPLES = """Examples:

  mbret index examples/data/corpus.jsonl my-index
  mbret index src/ code-index --kind colbert --index plaid
  mbret index big.jsonl big-index --shards 8 --ray auto
  mbret search my-index "how do plants make sugar?" -k 5
  mbret search my-index "bread" --filter topic=cooking --filter "year>=2019"
  mbret search my-index --queries examples/data/queries.jsonl --json
  mbret add my-index more.jsonl
  mbret delete my-index doc-1 doc-2
  mbret compact my-index
  mbret info my-index --json
  mbret serve my-index --port 8000
  mbret train --data examples/data/train.jsonl -o runs/demo --max-steps 20
  mbret mine examples/data runs/mined.jsonl --split test -n 2
  mbret eval examples/data --model runs/demo/final
  mbret bench encode --n 200

Run `mbret COMMAND --help` for each command's options and examples."""

app = typer.Typer(
    name="mbret",
    help="Dense and ColBERT retrieval on ModernBERT: build index folders, search them, keep them up to date, "
         "serve them over HTTP, fine-tune and evaluate models.\n\n" + EXIT_CODES_HELP,
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Library logs and tracebacks on errors."),
          ) -> None:
    setup_logging(verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _epilog(*lines: str) -> str:
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines) + "\n\n" + EXIT_CODES_HELP


app.command("index", epilog=_epilog(
    "mbret index examples/data/corpus.jsonl my-index",
    "mbret index examples/data my-index --hybrid      (BEIR folder, plus BM25)",
    "mbret index notes/ notes-index --model path/to/model   (every text-like file; a summary says what was read)",
    "mbret index faq.csv faq-index --text-column answer --id-column id --title-column question",
    "mbret index notes.txt notes-index --txt-split paragraph   (or line | file)",
    "mbret index docs.jsonl existing-folder --force   (a non-empty folder that holds no index)",
    "mbret index src/ code-index --kind colbert --index plaid -p nbits=4",
    "mbret index big.jsonl big-index --index hnsw -p hnsw_m=32 --batch-size 64",
    "mbret index big.jsonl big-index --shards 8 --index ivfpq -p pq_m=48   (encoding in 8 resumable shards, one index)",
    "mbret index big.jsonl big-index --shards 64 --ray auto --workers 8   (encode on a Ray cluster)",
    "torchrun --nproc-per-node 4 -m mbert_retrieval.cli.main index big.jsonl big-index --shards 16",
    "(interrupted? run the same command again: it resumes)",
))(index_cmd)
app.command("search", epilog=_epilog(
    "mbret search my-index \"how do plants make sugar?\"",
    "mbret search my-index bread -k 3 -f topic=cooking -f \"year>=2019\" --json",
    "mbret search my-index \"trade\" --filter '{\"year\": {\"$lt\": 0}}'",
    "mbret search my-index --queries queries.jsonl --json > results.jsonl",
    "mbret search my-index \"rust ownership\" --hybrid   (this search only; --no-hybrid the other way)",
))(search_cmd)
app.command("info", epilog=_epilog("mbret info my-index", "mbret info my-index --json --verify"))(info_cmd)
app.command("add", epilog=_epilog(
    "mbret add my-index new-docs.jsonl",
    "mbret add my-index changed-docs.jsonl --update",
))(add_cmd)
app.command("delete", epilog=_epilog(
    "mbret delete my-index doc-1 doc-2",
    "mbret delete my-index --ids-file stale-ids.txt --json",
))(delete_cmd)
app.command("compact", epilog=_epilog(
    "mbret compact my-index",
    "mbret compact my-index --json",
))(compact_cmd)
app.command("serve", epilog=_epilog(
    "mbret serve my-index          (http://127.0.0.1:8000, API docs at /docs)",
    "curl -s localhost:8000/search -H 'content-type: application/json' \\\n     -d '{\"query\": \"bread\", \"k\": 3}'",
    "mbret serve my-index --host 0.0.0.0 --read-only   (no auth: use a proxy)",
))(serve_cmd)
app.command("train", epilog=_epilog(
    "mbret train -d examples/data/train.jsonl -o runs/demo --max-steps 20",
    "mbret train --config train.toml --set lr=1e-5 --resume",
    "mbret train --kind colbert --data mined.jsonl --set n_hard_negatives=1",
))(train_cmd)
app.command("mine", epilog=_epilog(
    "mbret mine ../data/scifact runs/mined.jsonl --model sentence-transformers/all-MiniLM-L6-v2",
    "mbret mine ../data/scifact runs/mined.jsonl --index scifact-index --range 20 200 -n 4",
    "mbret train --data runs/mined.jsonl --set n_hard_negatives=1 -o runs/tuned",
))(mine_cmd)
app.command("eval", epilog=_epilog(
    "mbret eval examples/data              (default model, exact search)",
    "mbret eval scifact nfcorpus --model runs/demo/final -o results/",
    "mbret eval examples/data --index my-index --json   (the index's search)",
    "mbret eval examples/data --index my-index --hybrid   (fuse BM25 for this run; the index is not changed)",
))(eval_cmd)
app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            epilog=_epilog("mbret bench --list", "mbret bench encode --n 200 --json",
                           "mbret bench encode -- --help     (the script's own options)"))(bench_cmd)


def main() -> None:
    app(prog_name="mbret")


if __name__ == "__main__":
    main()
