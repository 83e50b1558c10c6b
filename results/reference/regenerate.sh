#!/bin/sh
# Regenerates every CSV, figure and table in results/reference/ from the stores the reference
# experiments wrote (it never runs a cell; `kvlab run experiments/reference/<spec>.yaml` does).
#   results/reference/regenerate.sh            (from anywhere; uses ./build/kvlab)
set -eu
cd "$(dirname "$0")/../.."
K=./build/kvlab
R=results/reference
F=$R/figures

# CSV exports: exactly each spec's grid (cells shared between specs are stored once).
for spec in quality kvmix_ablations window_group peers_window1 decode_4k long_context_cpu; do
  out=$spec
  [ "$spec" = long_context_cpu ] && out=long_context
  $K results export experiments/reference/$spec.yaml --grid --csv $R/$out.csv
done

# Figures (kvlab plot: PNG + PDF + the JSON of the plotted numbers).
$K plot tradeoff --csv $R/quality.csv --metric ppl --label bits --out $F/quality_ppl
$K plot tradeoff --csv $R/quality.csv --metric kl_mean --label bits --out $F/quality_kl
$K plot tradeoff --csv $R/quality.csv --metric top1_agreement --out $F/quality_top1
$K plot tradeoff --csv $R/kvmix_ablations.csv --metric kl_mean --split bits_from,ratio_preset --out $F/kvmix_ablations
$K plot tradeoff --csv $R/window_group.csv --metric kl_mean --split residual,group,v_axis --label group --out $F/window_group
$K plot longbench --csv $R/long_context.csv --out $F/longbench
$K plot retrieval --csv $R/long_context.csv --out $F/retrieval

# Tables: results/reference/tables.md, kvlab's rows for the peers' table, then the side-by-side table.
/usr/bin/python3 $R/make_tables.py
(cd bench/peers && /usr/bin/python3 make_table.py --extra ../../$R/kvlab_peer_rows.csv --out ../../$R/side_by_side)
/usr/bin/python3 $R/make_tables.py --splice
