#!/bin/bash
# tools/run/spec-bench.sh [MODEL_DIR] [TOKENS]: the speculative decoding table of
# bench/results/2026-12-06-speculative-cpu.md (k = 0..3, forced acceptance and rejection,
# batch 1 and 8). Extra deepseekd-run flags (--backend cuda) go in $DSD_RUN_FLAGS.
M=${1:-build/models/small}; T=${2:-64}
R=${DSD_RUN:-build/tools/run/deepseekd-run}
P=$(python3 -c "print(' '.join(str((i*7919+17)%16000+2) for i in range(32)))")
for b in 1 8; do
 for k in 0 1 2 3; do
  for f in reject accept; do
   if [ $k = 0 ] && [ $f = accept ]; then continue; fi
   out=$($R --model $M --prompt-tokens "$P" --max-tokens $T --greedy --ignore-eos --threads 2 --speculative-tokens $k --spec-force $f --batch $b $DSD_RUN_FLAGS 2>&1 >/dev/null)
   tps=$(echo "$out" | sed -n 's/.*(\([0-9.]*\) tok\/s).*/\1/p')
   len=$(echo "$out" | sed -n 's/.*mean acceptance length \([0-9.]*\);.*/\1/p')
   st=$(echo "$out" | sed -n 's/.*engine steps \([0-9]*\).*/\1/p')
   echo "batch $b k $k force $f: $tps tok/s, mean acceptance length $len, engine steps $st"
  done
 done
done
