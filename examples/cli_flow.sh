#!/usr/bin/env bash
# The `mbret` command line on the bundled example corpus: index, search, add, delete, info.
#
#   bash examples/cli_flow.sh                      # default model (offline: packaged all-MiniLM-L6-v2)
#   MODEL=path/or/hub-id bash examples/cli_flow.sh
#   INDEX=/tmp/my-index bash examples/cli_flow.sh  # where the index goes (default: indexes/example-cli)
set -euo pipefail
cd "$(dirname "$0")/.."

INDEX="${INDEX:-indexes/example-cli}"
MODEL_ARGS=()
if [[ -n "${MODEL:-}" ]]; then MODEL_ARGS=(--model "$MODEL"); fi
rm -rf "$INDEX"

echo "== index the example corpus (a JSONL file; a BEIR folder, text files or a code folder work too)"
mbret index examples/data/corpus.jsonl "$INDEX" --hybrid "${MODEL_ARGS[@]}"

echo "== search"
mbret search "$INDEX" "how do plants make sugar from light?" -k 3

echo "== search with metadata filters (ANDed), as JSON"
mbret search "$INDEX" "something tasty to cook" -k 3 --filter topic=cooking --filter "year>=2020" --json

echo "== a JSON filter: documents dated before year 0"
mbret search "$INDEX" "ancient building and trade" -k 3 --filter '{"year": {"$lt": 0}}'

echo "== every example query at once (JSON Lines, one object per query)"
RESULTS="$(mktemp --suffix=.jsonl)"
mbret search "$INDEX" --queries examples/data/queries.jsonl -k 1 --json > "$RESULTS"
head -n 3 "$RESULTS"

echo "== add a document, find it, delete it"
NEW_DOCS="$(mktemp --suffix=.jsonl)"
trap 'rm -f "$NEW_DOCS" "$RESULTS"' EXIT
cat > "$NEW_DOCS" <<'JSONL'
{"_id": "cook-sourdough", "title": "Keeping a sourdough starter", "text": "A sourdough starter is a living culture of wild yeast and lactic acid bacteria. Feed it equal weights of flour and water every day and keep it somewhere warm until it bubbles.", "metadata": {"topic": "cooking", "year": 2024}}
JSONL
mbret add "$INDEX" "$NEW_DOCS"
mbret search "$INDEX" "how do I feed a sourdough starter" -k 1
mbret delete "$INDEX" cook-sourdough

echo "== describe the index"
mbret info "$INDEX"
