#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan), makes their seed corpora, and
# runs each for FUZZ_SECONDS (default 60): the IDX, checkpoint, .npy, table and image
# (PNG, JPEG) readers, and the report page and metrics lines `cvae report` reads. Any
# crash, leak, sanitizer report or allocation
# over the malloc limit fails the run. Usage: tests/fuzz/run.sh [BUILD_DIR_WITH_CVAE]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
seconds=${FUZZ_SECONDS:-60}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -D_GNU_SOURCE -Iinclude -Isrc/kernels -Isrc/host)
h=src/host
clang "${flags[@]}" tests/fuzz/fuzz_idx.c $h/data/idx.c $h/util/fileio.c \
    $h/util/status.c -lz -o "$work/fuzz_idx"
clang "${flags[@]}" tests/fuzz/fuzz_checkpoint.c $h/model/checkpoint.c $h/model/model.c \
    $h/data/names.c $h/util/rng.c $h/util/fileio.c $h/util/status.c -lz -lm \
    -o "$work/fuzz_checkpoint"
clang "${flags[@]}" tests/fuzz/fuzz_npy.c $h/data/npy.c $h/util/fileio.c $h/util/status.c \
    -o "$work/fuzz_npy"
clang "${flags[@]}" tests/fuzz/fuzz_report.c $h/report/report_page.c $h/report/report_charts.c \
    $h/report/report_text.c $h/util/fileio.c $h/util/status.c -lm -o "$work/fuzz_report"
clang "${flags[@]}" -I/usr/include/stb tests/fuzz/fuzz_image.c $h/data/image.c \
    $h/data/image_area.c $h/data/image_buffer.c $h/data/image_png.c $h/data/image_jpeg.c \
    $h/util/fileio.c $h/util/status.c -lpng -ljpeg -lstb -lm -o "$work/fuzz_image"
clang "${flags[@]}" tests/fuzz/fuzz_table.c $h/data/table.c $h/data/image_table.c \
    $h/data/image_list.c $h/data/names.c $h/util/fileio.c $h/util/status.c -o "$work/fuzz_table"
# Debian's python3, whose PIL (python3-pil) writes the JPEG seeds, before any other on PATH
python=$(command -v /usr/bin/python3 || command -v python3)
"$python" tests/fuzz/make_corpus.py --cvae "$build/cvae" --out "$work/seeds"

for target in idx checkpoint npy report table image; do
    mkdir -p "$work/corpus-$target"
    echo "fuzzing the $target reader for ${seconds}s"
    # inputs up to 16 KiB; a gzip IDX may justify 1032x that, so 64 MiB bounds any
    # allocation a well-behaved reader makes. An image file's header may honestly ask for
    # up to 256 MiB of pixels (CV_IMAGE_MAX_DECODED: a tiny JPEG can be a vast grey one),
    # which the image target is allowed, and no more.
    limit=64 rss=1024
    if [ "$target" = image ]; then limit=300 rss=2048; fi
    rc=0
    "$work/fuzz_$target" -max_total_time="$seconds" -max_len=16384 -malloc_limit_mb=$limit \
        -rss_limit_mb=$rss -print_final_stats=1 -artifact_prefix="$work/" \
        "$work/corpus-$target" "$work/seeds/$target" > "$work/log-$target" 2>&1 || rc=$?
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$work/log-$target" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$work/log-$target" >&2
        echo "fuzz_$target failed (exit $rc): see the report above" >&2
        exit 1
    fi
done
echo "fuzzing: no crash, leak or oversized allocation"
