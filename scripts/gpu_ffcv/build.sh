#!/usr/bin/env bash
# Build FFCV 1.0.2 for the lent GPU machine into .gpu-ffcv/ (repo root).
#
# That machine has Python 3.12, torch, numba, numpy, pillow and opencv-python-headless,
# but no apt, no network and no libturbojpeg/OpenCV development files, so FFCV cannot be
# pip-installed there. Here (Debian 12, libturbojpeg0-dev libopencv-dev pkg-config) we
# compile FFCV's one C++ extension for CPython 3.12 and carry the shared libraries it
# needs beside it; the extension's RPATH ($ORIGIN/../ffcv.libs, DT_RPATH so it also
# serves the libraries' own dependencies) finds them, so no LD_LIBRARY_PATH is needed.
#
# Result (~25 MB):  .gpu-ffcv/site/ffcv/           FFCV's Python package + _libffcv
#                   .gpu-ffcv/site/ffcv.libs/      OpenCV core/imgproc, turbojpeg and deps
#                   .gpu-ffcv/env.sh               source it: puts site/ and the repo on PYTHONPATH
# Use on the device: run(carry=[".gpu-ffcv"], command="source .gpu-ffcv/env.sh && ...")
# (add /.gpu-ffcv/ to .git/info/exclude once).
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
OUT="$ROOT/.gpu-ffcv"
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3}
PIP=${PIP:-/work/venv/bin/pip}   # any pip that can reach PyPI, only to fetch the sdist
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version'
"$PIP" download -q ffcv==1.0.2 --no-deps --no-binary :all: -d "$WORK"
tar xzf "$WORK"/ffcv-1.0.2.tar.gz -C "$WORK"
SRC="$WORK/ffcv-1.0.2"

rm -rf "$OUT"
mkdir -p "$OUT/site/ffcv.libs"
cp -r "$SRC/ffcv" "$OUT/site/ffcv"
# graph.py imports an unused name from distutils, which Python 3.12 no longer has.
sed -i '/^from distutils.log import warn$/d' "$OUT/site/ffcv/pipeline/graph.py"

EXT="$OUT/site/ffcv/_libffcv$("$PY312" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
PYINC=$("$PY312" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
# Same flags as FFCV's setup.py, plus --as-needed (only core+imgproc of OpenCV are used).
g++ -O3 -shared -fPIC -I"$PYINC" $(pkg-config --cflags opencv4 libturbojpeg) \
    "$SRC/libffcv/libffcv.cpp" -o "$EXT" \
    -Wl,--as-needed -lopencv_imgproc -lopencv_core -lturbojpeg -lpthread \
    -Wl,--disable-new-dtags,-rpath,'$ORIGIN/../ffcv.libs'

# Carry every library the extension pulls in, except the C/C++ runtime every image has
# (loading our own libstdc++ could break torch, which needs the machine's newer one).
SKIP='^(linux-vdso|ld-linux|libc|libm|libstdc\+\+|libgcc_s|libz|libpthread|libdl|librt)\.so'
ldd "$EXT" | awk '/=>/ {print $1, $3}' | while read -r name path; do
    if ! [[ "$name" =~ $SKIP ]]; then
        cp -L "$path" "$OUT/site/ffcv.libs/$name"
        strip --strip-unneeded "$OUT/site/ffcv.libs/$name"
    fi
done
strip --strip-unneeded "$EXT"

cat > "$OUT/env.sh" <<'ENV'
# Source from the repository root: FFCV (carried) and starx (this checkout) on PYTHONPATH.
export PYTHONPATH="$PWD/.gpu-ffcv/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
ENV

# Newest glibc / libstdc++ symbol versions needed: the device's must be at least these.
need() { objdump -T "$EXT" "$OUT"/site/ffcv.libs/* 2>/dev/null | grep -o "$1_[0-9.]*" | sort -Vu | tail -1; }
echo "built $OUT ($(du -sh "$OUT" | cut -f1)); needs $(need GLIBC) and $(need GLIBCXX)"
