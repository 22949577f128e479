#!/usr/bin/env bash
# A short fine-tuning run on the example data, evaluated before and after on the example BEIR folder.
#
#   bash examples/train_example.sh                          # starts from the default model
#   MODEL=path/or/hub-id STEPS=40 bash examples/train_example.sh
#   OUT=/tmp/run INDEX=/tmp/index bash examples/train_example.sh   # where the model and the index go
#
# examples/data/train.jsonl holds (query, positive) pairs that are different from the test queries in
# examples/data/queries.jsonl. A few steps on 39 pairs only shows the workflow: do not expect big gains.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-runs/example-train}"
INDEX="${INDEX:-indexes/example-trained}"
STEPS="${STEPS:-20}"
MODEL_ARGS=()
if [[ -n "${MODEL:-}" ]]; then MODEL_ARGS=(--model "$MODEL"); fi

echo "== before training"
mbret eval examples/data "${MODEL_ARGS[@]}" -k 10

echo "== training ($STEPS steps, batch of 8 queries with in-batch negatives)"
FINAL="$(mbret train --data examples/data/train.jsonl --output-dir "$OUT" "${MODEL_ARGS[@]}" \
           --max-steps "$STEPS" --batch-size 8 --lr 2e-5 --set save_steps=10 --json \
         | python -c 'import json, sys; print(json.load(sys.stdin)["model"])')"
echo "final model: $FINAL"

echo "== after training"
mbret eval examples/data --model "$FINAL" -k 10

echo "== use it: index and search with the fine-tuned model"
rm -rf "$INDEX"
mbret index examples/data/corpus.jsonl "$INDEX" --model "$FINAL" -q
mbret search "$INDEX" "how many hours should adults sleep" -k 3
