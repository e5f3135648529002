#!/usr/bin/env bash
# The README's small "Train on your own images" example, from a fresh clone of the last
# commit: its class folders made by datasets/fashion_folders.py, cvae data with a preview,
# training (1 epoch instead of the README's 5), cvae info listing the class names, and
# generate --classes by name writing png folders named by them. The clone's build/cvae is
# this build's program (CVAE_BIN): the README's main command builds from a fresh clone
# already (tests/readme_main.sh). Exit 77: skipped.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cvae=$(realpath "${CVAE_BIN:-$src/build/cvae}")
if ! git -C "$src" rev-parse --verify -q HEAD >/dev/null; then
    echo "skipped: $src is not a git checkout with a commit to clone"
    exit 77
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "skipped: no /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)"
    exit 77
fi
block=$(awk '/^## Train on your own images/ { section = 1 }
             section && /A small example that runs from a fresh clone/ { example = 1 }
             example && /^```sh$/ { inside = 1; next }
             inside && /^```$/ { exit }
             inside { print }' "$src/README.md")
if [ -z "$block" ]; then
    echo "README.md has no example block under '## Train on your own images'" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$src" "$work/clone"
cd "$work/clone"
mkdir -p build
ln -s "$cvae" build/cvae
export XDG_CACHE_HOME=$work/cache
block=$(sed -e 's/--epochs 5/--epochs 1/' <<<"$block")
echo "running:"
echo "$block"
bash -euo pipefail -c "$block" >"$work/log" 2>&1 || {
    tail -n 20 "$work/log" >&2
    echo "the README's image folder example failed" >&2
    exit 1
}
grep -q "^classes: 0 Ankle-boot, 1 Bag, .* 7 Sneaker, 8 T-shirt, 9 Trouser$" "$work/log" || {
    cat "$work/log" >&2
    echo "cvae info did not list the class names" >&2
    exit 1
}
for f in runs/fashion-folders-preview.png runs/folders/model.ckpt runs/folders-png/Sneaker/7.png \
    runs/folders-png/Bag/0.png; do
    [ -s "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
echo "the README's image folder example ran from a fresh clone: $(grep -c . "$work/log") lines of output"
