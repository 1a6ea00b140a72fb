#!/usr/bin/env bash
# int8 against float32, ours and ONNX Runtime's, one run, engines interleaved: Lite0 (ImageNet
# shape, 1000 classes) and the default model, batch 1 and 16, 1 and 2 threads. Each round of a
# cell runs, in turn: ours fp32, ours int8 (bench_infer latency: cg_run_tensor), ONNX Runtime fp32,
# ONNX Runtime int8 (bench/int8_ort.py: session.run), each the median of RUNS calls after warm-up;
# a cell is the median of ROUNDS rounds. Then end-to-end covers/s from 500 JPEG files on 2 threads
# (cg_classify_files, ours only). Our int8 models are made here by `covergenre quantize` (Lite0:
# the defaults, and with --layers all; the default model's is the shipped file in models/),
# ONNX Runtime's by quantize_static (bench/int8_ort.py), all from the same 300 calibration covers of
# ../shared/data/covers/discogs5. Writes bench/results/<date>-int8.md (-int8-2.md, ... for later
# runs that day). The ONNX Runtime side runs in bench/work/venv, made here if missing.
#
#   bench/int8.sh [--no-build] [RUNS [ROUNDS]]    (default 30 and 3; batch-16 cells run RUNS/4 calls)
# --no-build uses the release products already in build/ instead of running scripts/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
command="bench/int8.sh $*"
build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
runs=${1:-30}
rounds=${2:-3}
data=../shared/data/covers/discogs5
work=bench/work/int8
mkdir -p "$work"
[ "$build" = 0 ] || scripts/build.sh >/dev/null
cc -O2 -o "$work/bench_infer" bench/bench_infer.c $(PKG_CONFIG_PATH=build/lib/pkgconfig pkg-config --cflags --libs covergenre) \
    -Wl,-rpath,"$(pwd)/build/lib"
cli=build/bin/covergenre
if [ ! -f "$work/lite0.cgm" ]; then
    labels=$(seq -s, -f 'class%g' 0 999)
    $cli create --arch efficientnet-lite0 --labels "$labels" --out "$work/lite0.cgm" >/dev/null
fi
# (File names name the recipe: the defaults changed when the depthwise convolutions became int8.)
[ -f "$work/lite0-int8-dw.cgm" ] || $cli quantize "$work/lite0.cgm" --calibration "$data" --out "$work/lite0-int8-dw.cgm" >/dev/null
# The same with the depthwise convolutions float (--depthwise off): what the int8 depthwise step adds.
[ -f "$work/lite0-int8-dwfloat.cgm" ] || $cli quantize "$work/lite0.cgm" --calibration "$data" --depthwise off \
    --out "$work/lite0-int8-dwfloat.cgm" >/dev/null
# Lite0 with its 1000-class linear layer int8 as well: ONNX Runtime's quantize_static makes its Gemm
# int8, so this row compares the same layers as far as ours go (the genre heads stay float: measured).
[ -f "$work/lite0-int8-dw-linear.cgm" ] || $cli quantize "$work/lite0.cgm" --calibration "$data" --layers all \
    --out "$work/lite0-int8-dw-linear.cgm" >/dev/null
# The default model's int8 version: the shipped file (models/, made by scripts/quantize-models.sh).
# ONNX Runtime: the venv as bench/run.sh makes it (without torch), then the float32 and int8 .onnx
# files (cached in $work; the int8 ones calibrated on the covers `covergenre quantize` picked above).
venv=bench/work/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check numpy onnx onnxruntime pillow >&2
ort_prepared=$("$venv/bin/python" bench/int8_ort.py --model "lite0=$work/lite0.cgm" --model default=models/covergenre-default.cgm \
    --calibration "$data" --prepare-only)
# 500 JPEG covers for the end-to-end rows (links, not copies).
if [ ! -d "$work/covers" ]; then
    mkdir -p "$work/covers"
    find "$data" -name '*.jpg' | sort | head -500 | while read -r f; do ln -s "$(readlink -f "$f")" "$work/covers/$(basename "$f")"; done
fi

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2fx", y / x}'; }  # $2 / $1
day=$(date +%F)
out=bench/results/$day-int8.md
n=2
while [ -e "$out" ]; do out=bench/results/$day-int8-$n.md; n=$((n + 1)); done
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
    echo "ONNX Runtime $(field onnxruntime <<<"$ort_prepared") (onnx $(field onnx <<<"$ort_prepared"), numpy $(field numpy <<<"$ort_prepared")), CPUExecutionProvider, ORT_ENABLE_ALL, intra_op_num_threads = threads."
    echo "ORT int8: quant_pre_process, then quantize_static (QDQ, weights QInt8 per channel, activations QUInt8 per tensor, MinMax) on the same 300 covers as ours;"
    echo "it makes every convolution int8 (stem and depthwise too) and keeps activations int8 between layers, where ours makes the 1x1 convolutions and the depthwise convolutions after them int8, with bytes between them (Lite0: the defaults; its second row keeps the depthwise convolutions float, its third makes the linear layer int8 too; the default model as shipped keeps its depthwise convolutions and three 1x1 convolutions float, docs/quantization.md)."
    if grep -q '^ort-quantize' <<<"$ort_prepared"; then
        echo "When made (quantized tensors; top-1 agreement of ORT int8 with ORT fp32 on those 300 calibration covers, a sanity check):"
        echo
        grep '^ort-quantize' <<<"$ort_prepared" | sed 's/^\(.*\)$/- `\1`/'
    fi
    echo
    echo "Command: $command. Median ms per call (batch images; ours cg_run_tensor, ORT session.run) of $runs calls ($(( (runs + 3) / 4 )) at batch 16),"
    echo "median of $rounds rounds; each round runs ours fp32, ours int8, ORT fp32, ORT int8 in turn."
    echo
    echo "| model | batch | threads | fp32 ms | int8 ms | int8 / fp32 | ORT fp32 ms | ORT int8 ms | ours int8 / ORT fp32 | ours int8 / ORT int8 | ORT int8 / ORT fp32 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > "$out"
for pair in "lite0:$work/lite0.cgm:$work/lite0-int8-dw.cgm" "lite0 (depthwise float):$work/lite0.cgm:$work/lite0-int8-dwfloat.cgm" \
    "lite0 (linear int8 too):$work/lite0.cgm:$work/lite0-int8-dw-linear.cgm" \
    "default:models/covergenre-default.cgm:models/covergenre-default-int8.cgm"; do
    IFS=: read -r name fp32 int8 <<<"$pair"
    ort_name=${name%% *}
    for batch in 1 16; do
        for threads in 1 2; do
            r=$runs
            [ "$batch" = 16 ] && r=$(( (runs + 3) / 4 ))
            a=() b=() c=() d=()
            for round in $(seq "$rounds"); do
                a+=("$("$work/bench_infer" latency "$fp32" "$threads" "$batch" "$r" | field median_ms)")
                b+=("$("$work/bench_infer" latency "$int8" "$threads" "$batch" "$r" | field median_ms)")
                # Both ORT engines in one process (fp32, then int8): Python starts once per cell and round.
                o=$("$venv/bin/python" bench/int8_ort.py --model "$ort_name=$fp32" --batch "$batch" --threads "$threads" --runs "$r")
                c+=("$(grep 'engine=ort-fp32 ' <<<"$o" | field median_ms)")
                d+=("$(grep 'engine=ort-int8 ' <<<"$o" | field median_ms)")
            done
            fa=$(printf '%s\n' "${a[@]}" | median) fb=$(printf '%s\n' "${b[@]}" | median)
            fc=$(printf '%s\n' "${c[@]}" | median) fd=$(printf '%s\n' "${d[@]}" | median)
            echo "| $name | $batch | $threads | $fa | $fb | $(ratio "$fa" "$fb") | $fc | $fd | $(ratio "$fc" "$fb") | $(ratio "$fd" "$fb") | $(ratio "$fc" "$fd") |" | tee -a "$out"
        done
    done
done
{
    echo
    echo "End to end, default model, 2 threads, 500 JPEG covers (ours only: cg_classify_files, covers/s, median of $rounds interleaved rounds):"
    echo
    echo "| fp32 covers/s | int8 covers/s | int8 / fp32 |"
    echo "|---|---|---|"
} >> "$out"
a=() b=()
for round in $(seq "$rounds"); do
    a+=("$("$work/bench_infer" throughput models/covergenre-default.cgm 2 "$work/covers" | field covers_per_second)")
    b+=("$("$work/bench_infer" throughput models/covergenre-default-int8.cgm 2 "$work/covers" | field covers_per_second)")
done
fa=$(printf '%s\n' "${a[@]}" | median) fb=$(printf '%s\n' "${b[@]}" | median)
echo "| $fa | $fb | $(awk -v x="$fa" -v y="$fb" 'BEGIN {printf "%.2f", y / x}')x |" | tee -a "$out"
echo "wrote $out"
