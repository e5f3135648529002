#!/usr/bin/env bash
# install.sh: `meson install` of a build into a temporary DESTDIR, then the installed tree
# as a user of the library meets it: every file in its place, no installed header that
# includes one that is not, `cvae --version` (which finds a CUDA build's module), and
# examples/train_minimal.c built with pkg-config alone, linked once against libcvae.so and
# once against libcvae.a, each trained on a small IDX set.
#
# usage: install.sh BUILDDIR EXAMPLE.c VERSION; meson test passes these and sets MESON
# (the meson program), CC (the build's C compiler) and SANITIZE (b_sanitize: a sanitized
# library needs a program built with the same sanitizers).
set -euo pipefail
build=$1 example=$2 version=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "install.sh: $*" >&2
    exit 1
}

dest=$tmp/dest
$MESON install -C "$build" --destdir "$dest" --no-rebuild --quiet

# the installed tree: PREFIX/bin/cvae, PREFIX/lib*/{libcvae.*,pkgconfig/cvae.pc}, ...
cvae=$(find "$dest" -path '*/bin/cvae' -type f)
[ -n "$cvae" ] || fail "bin/cvae is not installed"
prefix=$(dirname "$(dirname "$cvae")")
pc=$(find "$dest" -name cvae.pc)
[ -n "$pc" ] || fail "cvae.pc is not installed"
libdir=$(dirname "$(dirname "$pc")")
case $libdir in "$prefix"/lib*) ;; *) fail "cvae.pc is in $libdir, not under $prefix/lib*" ;; esac
for f in "$libdir/libcvae.a" "$libdir/libcvae.so" "$prefix/share/man/man1/cvae.1"; do
    [ -e "$f" ] || fail "${f#"$prefix"/} is not installed"
done
compgen -G "$libdir/libcvae.so.*" >/dev/null || fail "no versioned libcvae.so.* is installed"
for h in backend checkpoint comm cvae data eval generate model npy rng status train version; do
    [ -f "$prefix/include/cvae/$h.h" ] || fail "include/cvae/$h.h is not installed"
done
for h in backend_select fileio interrupt png sha256; do
    [ ! -e "$prefix/include/cvae/$h.h" ] || fail "the internal header cvae/$h.h is installed"
done
for h in "$prefix"/include/cvae/*.h; do
    while read -r inc; do
        [ -f "$prefix/include/$inc" ] ||
            fail "installed cvae/$(basename "$h") includes \"$inc\", which is not installed"
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$h")
done

out=$("$cvae" --version)
first=${out%%$'\n'*}
[ "$first" = "cvae $version" ] || fail "installed cvae --version says '$first', not 'cvae $version'"
# a CUDA build's module is installed beside libcvae, where the installed program finds it
# (its library folder, relative to its own: here under DESTDIR)
if grep -q '^CUDA backend: built' <<<"$out"; then
    [ -f "$libdir/libcvae-cuda.so" ] || fail "the CUDA module is not installed: no ${libdir#"$prefix"/}/libcvae-cuda.so"
    grep -qF "CUDA module: $(realpath "$libdir")/libcvae-cuda.so" <<<"$out" ||
        fail "the installed cvae does not find its CUDA module: $(grep '^CUDA module' <<<"$out")"
fi

# PKG_CONFIG_SYSROOT_DIR puts cvae.pc's -I and -L paths under DESTDIR
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR=$dest
[ "$(pkg-config --modversion cvae)" = "$version" ] || fail "cvae.pc does not say version $version"
flags=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
[ "${SANITIZE:-none}" = none ] || flags+=("-fsanitize=$SANITIZE")
# word splitting of the pkg-config output is intended, as on a user's command line
# shellcheck disable=SC2046
$CC "${flags[@]}" "$example" $(pkg-config --cflags --libs cvae) -o "$tmp/train_shared"

# The static build: libcvae.a and every library pkg-config --static lists that the linker
# can find. A dependency's .pc may list one only its own static build needs (Debian's
# openblas.pc lists -lgfortran, whose link-time file comes with gfortran), but every
# library cvae.pc lists itself must be found. The sysroot went before every -L folder,
# the system's too (OpenBLAS's, CUDA's): those outside DESTDIR get their own path back.
own=" $(sed -n 's/^Libs\.private://p' "$pc") "
ldirs=()
findable() {
    local f d
    for f in "lib$1.so" "lib$1.a"; do
        for d in "${ldirs[@]}"; do [ -e "$d/$f" ] && return 0; done
        [ "$($CC -print-file-name="$f")" != "$f" ] && return 0
    done
    return 1
}
static=()
for w in $(pkg-config --static --libs cvae); do
    case $w in
    -lcvae) w=-l:libcvae.a ;;
    -L*)
        d=${w#-L}
        [ -d "$d" ] || d=${d#"$dest"}
        w=-L$d
        ldirs+=("$d")
        ;;
    -l*)
        if ! findable "${w#-l}"; then
            [[ $own != *" $w "* ]] || fail "cvae.pc lists $w; the linker has no lib${w#-l}"
            echo "install.sh: leaving out $w, which a dependency lists and the linker cannot find"
            continue
        fi
        ;;
    esac
    static+=("$w")
done
# shellcheck disable=SC2046
$CC "${flags[@]}" "$example" $(pkg-config --cflags cvae) "${static[@]}" -o "$tmp/train_static"
# C++ programs link against the C API too: the headers declare it extern "C". The C++
# compiler is of the C compiler's family: a sanitized libcvae needs the program linked with
# the same sanitizer runtime (gcc's libasan and clang's do not mix).
if "$CC" --version 2>/dev/null | grep -q clang; then cxx=$(command -v clang++ || true); else cxx=$(command -v g++ || true); fi
cxxflags=(-Wall -Werror)
[ "${SANITIZE:-none}" = none ] || cxxflags+=("-fsanitize=$SANITIZE")
if [ -n "$cxx" ]; then
    printf '#include <cvae/cvae.h>\nint main() { return cv_train_defaults().epochs == 10 ? 0 : 1; }\n' \
        > "$tmp/use.cpp"
    # shellcheck disable=SC2046
    "$cxx" "${cxxflags[@]}" "$tmp/use.cpp" $(pkg-config --cflags --libs cvae) -o "$tmp/use_cpp" ||
        fail "a C++ program cannot use the installed headers and library"
    LD_LIBRARY_PATH=$libdir "$tmp/use_cpp" || fail "the C++ program got the wrong defaults"
else
    echo "install: no C++ compiler of $CC's family, the C++ check is skipped"
fi
grep -q 'NEEDED.*libcvae\.so' <<<"$(readelf -d "$tmp/train_shared")" ||
    fail "the shared build does not load libcvae.so"
! grep -q 'NEEDED.*libcvae' <<<"$(readelf -d "$tmp/train_static")" ||
    fail "the static build loads libcvae.so"

# 200 training and 50 test images of 8x8 in 4 classes
data=$tmp/data
mkdir "$data"
python3 "$(dirname "$0")/random_idx_set.py" "$data" 200 50

for kind in shared static; do
    LD_LIBRARY_PATH=$libdir "$tmp/train_$kind" "$data" "$tmp/run_$kind" >"$tmp/out_$kind" 2>&1 ||
        fail "train_minimal ($kind) failed: $(tail -n 1 "$tmp/out_$kind")"
    [ -f "$tmp/run_$kind/model.ckpt" ] || fail "train_minimal ($kind) wrote no checkpoint"
    grep -Eq '^final test -ELBO -?[0-9]+\.[0-9]+ nats' "$tmp/out_$kind" ||
        fail "train_minimal ($kind) printed no finite test -ELBO: $(tail -n 1 "$tmp/out_$kind")"
    "$cvae" info --model "$tmp/run_$kind/model.ckpt" >/dev/null ||
        fail "the installed cvae cannot read the checkpoint train_minimal ($kind) wrote"
done
echo "install: $prefix holds cvae $version; train_minimal built and ran (shared and static)"
