#!/usr/bin/env bash
# The C libraries FFCV builds against (libturbojpeg, OpenCV core + imgproc, pkg-config), without root.
# Prints the shell lines (export ...) that point FFCV's build at them; messages go to stderr.
#   eval "$(bash scripts/syslibs.sh)"      # what scripts/install.sh does
# Where they come from, in order:
#   1. already found by pkg-config (the system, a module's PKG_CONFIG_PATH, a previous run);
#   2. the active conda environment ($CONDA_PREFIX, e.g. conda install -c conda-forge libjpeg-turbo opencv pkg-config);
#   3. Debian/Ubuntu as root: apt-get install libturbojpeg0-dev libopencv-dev pkg-config;
#   4. Debian/Ubuntu without root: `apt-get download` of the -dev packages (and of what they need that
#      the system lacks), unpacked into .syslibs/ inside the project; FFCV links them with an rpath;
#   5. otherwise: says exactly what is missing and how to get it (exit 1).
# STARX_SYSLIBS=DIR puts the prefix elsewhere (default: .syslibs). STARX_SYSLIBS_FETCH=1 fetches
# into the prefix even where the system has the libraries (to test step 4 on a machine that has them).
set -euo pipefail
cd "$(dirname "$0")/.."
P=${STARX_SYSLIBS:-$PWD/.syslibs}
FETCH=${STARX_SYSLIBS_FETCH:-0}
say() { echo "[syslibs] $*" >&2; }
found() { command -v pkg-config >/dev/null && pkg-config --exists libturbojpeg opencv4 2>/dev/null; }

# 1. a previous run's prefix, or what is already there
if [ -f "$P/env.sh" ]; then
  # shellcheck disable=SC1091
  . "$P/env.sh"
  if found; then say "using $P"; cat "$P/env.sh"; exit 0; fi
fi
if [ "$FETCH" != 1 ] && found; then exit 0; fi

# 2. a conda environment
if [ "$FETCH" != 1 ] && [ -n "${CONDA_PREFIX:-}" ] && [ -f "$CONDA_PREFIX/lib/pkgconfig/libturbojpeg.pc" ] \
   && [ -f "$CONDA_PREFIX/lib/pkgconfig/opencv4.pc" ]; then
  lines="export PKG_CONFIG_PATH=\"$CONDA_PREFIX/lib/pkgconfig:\${PKG_CONFIG_PATH:-}\"
export LDFLAGS=\"-Wl,-rpath,$CONDA_PREFIX/lib \${LDFLAGS:-}\""
  [ -x "$CONDA_PREFIX/bin/pkg-config" ] && lines="$lines
export PATH=\"$CONDA_PREFIX/bin:\$PATH\""
  eval "$lines"
  if found; then say "using the conda environment $CONDA_PREFIX"; echo "$lines"; exit 0; fi
fi

missing=()
command -v pkg-config >/dev/null || missing+=("pkg-config (the command)" "libturbojpeg and OpenCV 4 (not looked for: no pkg-config)")
command -v pkg-config >/dev/null && ! pkg-config --exists libturbojpeg 2>/dev/null && missing+=("libturbojpeg (pkg-config module libturbojpeg: libjpeg-turbo's TurboJPEG API)")
command -v pkg-config >/dev/null && ! pkg-config --exists opencv4 2>/dev/null && missing+=("OpenCV 4 (pkg-config module opencv4)")
[ ${#missing[@]} -gt 0 ] || missing+=("(forced by STARX_SYSLIBS_FETCH=1)")

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  {
    echo "[syslibs] error: FFCV builds against libraries this machine lacks:"
    printf '[syslibs]   - %s\n' "${missing[@]}"
    echo "[syslibs] get them without root, then run the install again:"
    echo "[syslibs]   conda/mamba: conda install -c conda-forge libjpeg-turbo opencv pkg-config   (with that environment active)"
    echo "[syslibs]   modules:     module load <opencv> <libjpeg-turbo>   (so that pkg-config --exists opencv4 libturbojpeg succeeds)"
    echo "[syslibs]   or ask the admins for: libturbojpeg0-dev libopencv-dev pkg-config (Debian/Ubuntu), turbojpeg-devel opencv-devel pkgconf (RHEL)"
  } >&2
  exit 1
fi

# 3. Debian/Ubuntu as root
if [ "$(id -u)" = 0 ] && [ "$FETCH" != 1 ]; then
  say "apt-get install libturbojpeg0-dev libopencv-dev pkg-config"
  # shellcheck disable=SC1091
  . scripts/apt.sh
  if apt_install libturbojpeg0-dev libopencv-dev pkg-config && found; then exit 0; fi
  say "the root install failed: fetching the packages as a user would (step 4)"
fi

# 4. Debian/Ubuntu without root: apt-get download + dpkg-deb -x into $P
say "missing: ${missing[*]}"
say "fetching the Debian packages with apt-get download (no root needed) into $P"
want=(libturbojpeg0-dev libopencv-core-dev libopencv-imgproc-dev)
{ [ "$FETCH" = 1 ] || ! command -v pkg-config >/dev/null; } && want+=(pkg-config)
apt_opts=()
simulate() {  # the packages apt would install (the wanted ones and what the system lacks of their dependencies)
  apt-get -s -q "${apt_opts[@]}" --no-install-recommends install "${want[@]}" 2>/dev/null | awk '/^Inst /{print $2}'
}
if ! plan=$(simulate) || { [ -z "$plan" ] && [ "$FETCH" != 1 ]; }; then
  say "no usable package lists: apt-get update into $P/apt"
  mkdir -p "$P/apt/lists/partial" "$P/apt/cache/archives/partial"
  apt_opts=(-o "Dir::State::Lists=$P/apt/lists" -o "Dir::Cache=$P/apt/cache" -o Debug::NoLocking=1)
  apt-get "${apt_opts[@]}" -qq update >&2 || true
  plan=$(simulate) || { say "error: apt cannot resolve ${want[*]} here; install them as root or through conda"; exit 1; }
fi
# with STARX_SYSLIBS_FETCH=1 the wanted packages (and pkg-config's own, pkgconf on Debian 12) come even
# where they are installed
if [ "$FETCH" = 1 ]; then
  # shellcheck disable=SC2046
  plan=$(printf '%s\n' $plan "${want[@]}" $(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends \
    --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances pkg-config 2>/dev/null \
    | grep -E '^(lib)?pkgconf') | sort -u)
fi
rm -rf "$P/debs" "$P/root" "$P/pkgconfig" "$P/bin"
mkdir -p "$P/debs" "$P/root" "$P/pkgconfig" "$P/bin"
# shellcheck disable=SC2086
(cd "$P/debs" && apt-get "${apt_opts[@]}" -qq download $plan >&2) \
  || { say "error: apt-get download failed for: $(echo $plan)"; exit 1; }
for deb in "$P"/debs/*.deb; do dpkg-deb -x "$deb" "$P/root"; done
say "unpacked $(ls "$P"/debs/*.deb | wc -l) packages ($(du -sh "$P/debs" | cut -f1)) into $P/root"

core=$(find "$P/root" -name 'libopencv_core.so' | head -1)
tj=$(find "$P/root" -name 'libturbojpeg.so' | head -1)
[ -n "$core" ] && [ -n "$tj" ] || { say "error: the packages lack libopencv_core.so / libturbojpeg.so"; exit 1; }
libdir=$(dirname "$core")
sysdir=${libdir#"$P/root"}
# symlinks to libraries the system already has (a -dev package whose runtime library is installed)
find "$P/root" -type l | while read -r link; do
  [ -e "$link" ] && continue
  target=$(readlink "$link")
  case $target in /*) sys=$target ;; *) sys=$(dirname "${link#"$P/root"}")/$target ;; esac
  [ -e "$sys" ] && ln -sf "$sys" "$link"
done
# Debian keeps BLAS/LAPACK in subdirectories behind update-alternatives links that dpkg-deb -x does not make
for lib in "$libdir"/*/lib*.so.*; do
  [ -e "$lib" ] || continue
  name=$(basename "$lib")
  [ -e "$libdir/$name" ] || [ -e "$sysdir/$name" ] || ln -s "$lib" "$libdir/$name"
done
# libturbojpeg.pc with the prefix; an opencv4.pc and opencv_modules.hpp for core + imgproc only
# (what FFCV uses: cv::resize on cv::Mat), not all of OpenCV's modules and their dependencies
sed -E "s#(^[a-z_]+=|-I|-L)/usr#\1$P/root/usr#g" "$(dirname "$tj")/pkgconfig/libturbojpeg.pc" > "$P/pkgconfig/libturbojpeg.pc"
inc=$(dirname "$(dirname "$(find "$P/root" -path '*opencv2/core.hpp' | head -1)")")
version=$(sed -n 's/.*libopencv-core-dev_\([0-9.]*\).*/\1/p' <<<"$(ls "$P"/debs/libopencv-core-dev_*.deb)" | head -1)
cat > "$P/pkgconfig/opencv4.pc" <<EOF
libdir=$libdir
includedir=$inc
Name: OpenCV
Description: OpenCV core + imgproc, unpacked by starx's scripts/syslibs.sh
Version: ${version:-4}
Libs: -L\${libdir} -lopencv_imgproc -lopencv_core
Cflags: -I\${includedir}$(find "$P/root" -type d -path '*/include/*-linux-gnu/opencv4' -printf ' -I%p')
EOF
modules=$(find "$P/root" -name opencv_modules.hpp | head -1)
[ -n "$modules" ] && printf '#ifndef OPENCV_MODULES_HPP\n#define OPENCV_MODULES_HPP\n#define HAVE_OPENCV_CORE\n#define HAVE_OPENCV_IMGPROC\n#endif\n' > "$modules"

lines="export PKG_CONFIG_PATH=\"$P/pkgconfig:\${PKG_CONFIG_PATH:-}\"
export LDFLAGS=\"-L$libdir -Wl,--disable-new-dtags,-rpath,$libdir \${LDFLAGS:-}\""
pkgconf=$(find "$P/root" -path '*/usr/bin/pkgconf' -type f | head -1)
[ -n "$pkgconf" ] || pkgconf=$(find "$P/root" -path '*/usr/bin/pkg-config' -type f | head -1)
if [ -n "$pkgconf" ]; then  # the downloaded pkg-config, with its library
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' "$libdir" "$pkgconf" > "$P/bin/pkg-config"
  chmod +x "$P/bin/pkg-config"
  lines="$lines
export PATH=\"$P/bin:\$PATH\""
fi
echo "$lines" > "$P/env.sh"
eval "$lines"
found || { say "error: pkg-config still does not find libturbojpeg and opencv4 in $P"; exit 1; }
say "FFCV will build against $P (pkg-config: $(pkg-config --cflags --libs opencv4 libturbojpeg | tr -s ' '))"
echo "$lines"
