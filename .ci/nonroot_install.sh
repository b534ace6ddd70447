#!/usr/bin/env bash
# CI (issue 17): the install without root. Run as root at the end of .ci/run (it changes the system):
# removes FFCV's build libraries and what only they pulled in (pkg-config, the OpenCV and TurboJPEG
# -dev and runtime packages), then, as an unprivileged user in a fresh copy of the committed tree, scripts/syslibs.sh must
# fetch the Debian packages with apt-get download into .syslibs/, FFCV must build against them
# (pip wheel, the same sdist build `pip install` runs) and its extension must load without
# LD_LIBRARY_PATH. The rest of the install (pip, torch) is the same as the root path's.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
user=starx-ci
t0=$(date +%s)
installed=()
for p in libturbojpeg0-dev libopencv-dev pkg-config pkgconf pkgconf-bin; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' && installed+=("$p")
done
if [ ${#installed[@]} -gt 0 ]; then
  # shellcheck disable=SC1091
  . scripts/apt.sh
  apt_remove "${installed[@]}"
fi
if command -v pkg-config >/dev/null; then echo "[nonroot] error: pkg-config is still installed" >&2; exit 1; fi
echo "[nonroot] removed ${installed[*]} and what only they needed ($(( $(date +%s) - t0 )) s)"
id "$user" >/dev/null 2>&1 || useradd -m "$user"
home=$(getent passwd "$user" | cut -d: -f6)
rm -rf "$home/starx" && mkdir "$home/starx"
# the committed tree, written as root (the CI checkout may sit where the user cannot read), then theirs
git -C "$repo" -c safe.directory='*' archive HEAD | tar -x -C "$home/starx"
chown -R "$user:" "$home/starx"
su "$user" -c 'bash -s' <<'USER'
set -euo pipefail
cd ~/starx
[ "$(id -u)" != 0 ]
eval "$(bash scripts/syslibs.sh)"
case $(command -v pkg-config) in */.syslibs/bin/pkg-config) ;; *) echo "[nonroot] error: pkg-config is not the fetched one" >&2; exit 1 ;; esac
pkg-config --cflags --libs opencv4 libturbojpeg | grep -q "$HOME/starx/.syslibs"
python3 -m venv .syslibs/venv
.syslibs/venv/bin/pip install -q --disable-pip-version-check --use-pep517 --no-deps ffcv==1.0.2 >/dev/null
so=$(ls .syslibs/venv/lib/python3*/site-packages/ffcv/_libffcv*.so)
env -u LD_LIBRARY_PATH ldd "$so" > .syslibs/ldd.txt
cat .syslibs/ldd.txt | grep -E "opencv|turbojpeg|tbb|lapack|blas|not found" | sed 's/^/[nonroot]   /'
if grep -q "not found" .syslibs/ldd.txt; then echo "[nonroot] error: unresolved libraries" >&2; exit 1; fi
grep "libopencv_core" .syslibs/ldd.txt | grep -q "/.syslibs/"
env -u LD_LIBRARY_PATH .syslibs/venv/bin/python -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$so"
echo "[nonroot] FFCV built against .syslibs/ as uid $(id -u) and its extension loads"
USER
echo "[nonroot] ok in $(( $(date +%s) - t0 )) s"
