#!/usr/bin/env bash
# int8 against float32, one run, engines interleaved: Lite0 (ImageNet shape, 1000 classes) and the
# default model, batch 1 and 16, 1 and 2 threads (bench_infer latency: cg_run_tensor, median of
# RUNS per round, median of 3 rounds taken in turn), then end-to-end covers/s from 500 JPEG files
# on 2 threads (cg_classify_files). The int8 models are made here by `covergenre quantize` from
# 300 discogs5 train covers (../shared/data). Writes bench/results/<date>-int8.md.
#
#   bench/int8.sh [RUNS]      (default 30)
# ONNX Runtime's rows (fp32 and quantize_static int8) are not part of this script yet.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
data=../shared/data/covers/discogs5
work=bench/work/int8
mkdir -p "$work"
scripts/build.sh >/dev/null
cc -O2 -o "$work/bench_infer" bench/bench_infer.c $(PKG_CONFIG_PATH=build/lib/pkgconfig pkg-config --cflags --libs covergenre) \
    -Wl,-rpath,"$(pwd)/build/lib"
cli=build/bin/covergenre
if [ ! -f "$work/lite0.cgm" ]; then
    labels=$(seq -s, -f 'class%g' 0 999)
    $cli create --arch efficientnet-lite0 --labels "$labels" --out "$work/lite0.cgm" >/dev/null
fi
[ -f "$work/lite0-int8.cgm" ] || $cli quantize "$work/lite0.cgm" --calibration "$data" --out "$work/lite0-int8.cgm" >/dev/null
[ -f "$work/default-int8.cgm" ] || $cli quantize models/covergenre-default.cgm --calibration "$data" --out "$work/default-int8.cgm" >/dev/null
# 500 JPEG covers for the end-to-end rows (links, not copies).
if [ ! -d "$work/covers" ]; then
    mkdir -p "$work/covers"
    find "$data" -name '*.jpg' | sort | head -500 | while read -r f; do ln -s "$(readlink -f "$f")" "$work/covers/$(basename "$f")"; done
fi

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
out=bench/results/$(date +%F)-int8.md
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
family=$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
model=$(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni)$' | tr '\n' ' ')
variant=$("$work/bench_infer" latency models/covergenre-default.cgm 1 1 1 | field variant)
case "$variant" in
avx512) if [[ " $flags" == *" avx512_vnni "* ]]; then int8_kernel=avx512-vnni; else int8_kernel=avx2; fi ;;
avx2) int8_kernel=avx2 ;;
*) int8_kernel=generic ;;
esac
{
    echo "# int8 against float32 ($(date +%F))"
    echo
    echo "Machine: $cpu, family $family model $model, $(nproc) cores; flags: $flags; kernel variant: $variant"
    echo "int8 kernel: $int8_kernel (the AVX-512 variant runs VNNI where the CPU has it, else the AVX2 kernel; QuantizedGEMMTests prints it too)."
    echo "Command: bench/int8.sh $runs. Median ms of cg_run_tensor per call (batch images), median of 3 interleaved rounds."
    echo
    echo "| model | batch | threads | fp32 ms | int8 ms | int8 / fp32 |"
    echo "|---|---|---|---|---|---|"
} > "$out"
for pair in "lite0:$work/lite0.cgm:$work/lite0-int8.cgm" "default:models/covergenre-default.cgm:$work/default-int8.cgm"; do
    IFS=: read -r name fp32 int8 <<<"$pair"
    for batch in 1 16; do
        for threads in 1 2; do
            r=$runs
            [ "$batch" = 16 ] && r=$(( (runs + 3) / 4 ))
            a=() b=()
            for round in 1 2 3; do
                a+=("$("$work/bench_infer" latency "$fp32" "$threads" "$batch" "$r" | field median_ms)")
                b+=("$("$work/bench_infer" latency "$int8" "$threads" "$batch" "$r" | field median_ms)")
            done
            fa=$(printf '%s\n' "${a[@]}" | median) fb=$(printf '%s\n' "${b[@]}" | median)
            ratio=$(awk -v x="$fa" -v y="$fb" 'BEGIN {printf "%.2f", y / x}')
            echo "| $name | $batch | $threads | $fa | $fb | ${ratio}x |" | tee -a "$out"
        done
    done
done
{
    echo
    echo "End to end, default model, 2 threads, 500 JPEG covers (cg_classify_files, covers/s, median of 3 interleaved rounds):"
    echo
    echo "| fp32 covers/s | int8 covers/s | int8 / fp32 |"
    echo "|---|---|---|"
} >> "$out"
a=() b=()
for round in 1 2 3; do
    a+=("$("$work/bench_infer" throughput models/covergenre-default.cgm 2 "$work/covers" | field covers_per_second)")
    b+=("$("$work/bench_infer" throughput "$work/default-int8.cgm" 2 "$work/covers" | field covers_per_second)")
done
fa=$(printf '%s\n' "${a[@]}" | median) fb=$(printf '%s\n' "${b[@]}" | median)
echo "| $fa | $fb | $(awk -v x="$fa" -v y="$fb" 'BEGIN {printf "%.2f", y / x}')x |" | tee -a "$out"
echo "wrote $out"
