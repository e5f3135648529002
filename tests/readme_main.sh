#!/usr/bin/env bash
# The README's main command, from a fresh clone of this repository, exactly as written but
# for --epochs 1 (appended): it must build cvae, train, and leave the checkpoint, both
# pictures and the report page in the run folder. As root it runs the apt-get part too,
# as a new user would; otherwise that part is left out (the packages must then be there
# already).
# Usage: tests/readme_main.sh (meson test runs it as `readme_main`). Exit 77: skipped.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if ! git -C "$src" rev-parse --verify -q HEAD >/dev/null; then
    echo "skipped: $src is not a git checkout with a commit to clone"
    exit 77
fi
cmd=$(awk '/^## Train the default model/ { section = 1 }
           section && /^```sh$/ { getline; print; exit }' "$src/README.md")
if [ -z "$cmd" ]; then
    echo "README.md has no sh block under '## Train the default model'" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    cmd=$(sed -E 's/^apt-get update && apt-get install [^&]*&& //' <<<"$cmd")
    if [ ! -d /usr/share/datasets/fashion-mnist ]; then
        echo "skipped: not root, and dataset-fashion-mnist is not installed"
        exit 77
    fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$src" "$work/clone"
cd "$work/clone"
echo "running: $cmd --epochs 1"
rc=0
bash -c "$cmd --epochs 1" > "$work/log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    tail -n 30 "$work/log" >&2
    echo "the README's main command failed (exit $rc)" >&2
    exit 1
fi
tail -n 5 "$work/log"
runs=(runs/fashion-*)
if [ "${#runs[@]}" -ne 1 ] || [ ! -d "${runs[0]}" ]; then
    echo "expected one run folder under runs/, found: ${runs[*]}" >&2
    exit 1
fi
for f in model.ckpt samples.png reconstructions.png report.html; do
    if [ ! -s "${runs[0]}/$f" ]; then
        echo "${runs[0]}/$f is missing or empty" >&2
        exit 1
    fi
done
echo "the README's main command left ${runs[0]}/{model.ckpt,samples.png,reconstructions.png,report.html}"
