# shellcheck shell=bash
# med_range: read numbers, one a line, and print "MEDIAN (MIN-MAX)" with two
# decimals (sourced by bench/s3.sh and bench/s3_tree.sh).
med_range() {
  grep . | sort -g |
    awk '{v[NR]=$1} END {m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.2f (%.2f-%.2f)", m, v[1], v[NR]}'
}
