#!/usr/bin/env bash
# Issue #19's BFCL targets on the default model: prompt-only, prompt + constrained decoding, and LoRA on 75% of
# simple_python (tested on its held-out 25% and, for transfer, on `multiple`). Needs examples/bfcl (built by
# scripts/build_bfcl_example.py from ../shared/data/bfcl). N limits the examples per category.
#   bash scripts/bfcl_targets.sh [N] [OUT]
set -euo pipefail
N=${1:-50}
OUT=${2:-runs/bfcl-targets}
export HF_HUB_OFFLINE=1
T=.venv/bin/tailor
# simple_python through the ladder: zero-shot (prompt-only), tools-constrained and tools-lora, each cached.
$T ladder examples/bfcl/simple_python/task.yaml --out "$OUT/ladder-simple-python" \
  "ladder.rungs=[zero-shot,tools-constrained,tools-lora]" "ladder.eval_limit=$N" "ladder.sft.max_records=160"
LORA="$OUT/ladder-simple-python/rungs/tools-lora/system"
for c in multiple parallel parallel_multiple irrelevance; do
  task=examples/bfcl/$c/task.yaml
  mode=$(.venv/bin/python -c "from tailorlm.core.task import Task; print(Task.load('$task').ladder.tools.tool_choice)")
  $T eval run default --task "$task" --limit "$N" --root "$OUT/$c" --json > "$OUT/$c-prompt.json"
  $T eval run default --task "$task" --limit "$N" --root "$OUT/$c" --json \
    generation.constraint.type=tool_calls "generation.constraint.mode=$mode" > "$OUT/$c-constrained.json"
  if [ "$c" = multiple ]; then
    $T eval run "$LORA" --task "$task" --limit "$N" --root "$OUT/$c" --json > "$OUT/$c-lora.json"
  fi
done
