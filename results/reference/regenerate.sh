#!/bin/sh
# Regenerates every CSV, figure and table in results/reference/ from the stores the reference
# experiments wrote (it never runs a cell; `kvlab run experiments/reference/<spec>.yaml` does).
#   results/reference/regenerate.sh            (from anywhere; uses ./build/kvlab)
set -eu
cd "$(dirname "$0")/../.."
K=./build/kvlab
R=results/reference
F=$R/figures

# CSV exports: exactly each spec's grid (cells shared between specs are stored once). A spec whose
# store does not exist yet is skipped with a note, and so are its figures.
for spec in quality kvmix_ablations window_group peers_window1 decode_4k long_context_cpu; do
  out=$spec
  [ "$spec" = long_context_cpu ] && out=long_context
  rm -f $R/$out.csv
  $K results export experiments/reference/$spec.yaml --grid --csv $R/$out.csv 2>&1 | grep -v "^kvlab: note: kvmix" ||
    echo "note: $spec: nothing exported"
done

# Figures (kvlab plot: PNG + PDF + the JSON of the plotted numbers), from the CSVs that have cells.
plot() {  # plot CSV KIND ARGS...
  csv=$1; kind=$2; shift 2
  if [ -f $R/$csv.csv ] && [ "$(wc -l < $R/$csv.csv)" -gt 1 ]; then
    $K plot $kind --csv $R/$csv.csv "$@" || echo "note: no $kind figure from $csv.csv yet"
  fi
}
plot quality tradeoff --metric ppl --split bits_from --label bits --out $F/quality_ppl
plot quality tradeoff --metric kl_mean --split bits_from --label bits --out $F/quality_kl
plot quality tradeoff --metric top1_agreement --split bits_from --out $F/quality_top1
plot kvmix_ablations tradeoff --metric kl_mean --split bits_from,ratio_preset --out $F/kvmix_ablations
plot window_group tradeoff --metric kl_mean --split residual,group --label group --out $F/window_group
plot long_context longbench --out $F/longbench
plot long_context retrieval --out $F/retrieval

# Tables: results/reference/tables.md, kvlab's rows for the peers' table, then the side-by-side table.
/usr/bin/python3 $R/make_tables.py
extra=""
[ -f $R/kvlab_peer_rows.csv ] && extra="--extra ../../$R/kvlab_peer_rows.csv"
(cd bench/peers && /usr/bin/python3 make_table.py $extra --out ../../$R/side_by_side)
/usr/bin/python3 $R/make_tables.py --splice
