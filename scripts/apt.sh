# apt_install PKG...: Debian/Ubuntu packages as root, sourced by scripts/install.sh, scripts/syslibs.sh
# and .ci/nonroot_install.sh (apt_remove). A machine whose dpkg was interrupted (a killed install)
# refuses every apt-get install ("E: dpkg was interrupted, you must manually run 'dpkg --configure
# -a'"), which once failed CI in 2 s: finish that first, wait for another apt's lock rather than
# fail, and retry once after repairing.
apt_repair() {
  if [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ] || [ -n "$(dpkg --audit 2>/dev/null)" ]; then
    echo "[apt] dpkg was interrupted on this machine: dpkg --configure -a" >&2
    DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold >&2 || true
  fi
}
apt_get() {  # apt-get with the lock waited for and no questions asked
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
apt_install() {
  apt_repair
  apt_get update >&2 || true   # a stale mirror in the lists must not stop packages already resolvable
  apt_get install "$@" >/dev/null && return 0
  echo "[apt] apt-get install $* failed; repairing and trying once more" >&2
  apt_get -f install >&2 || true
  apt_repair
  apt_get install "$@" >/dev/null
}
apt_remove() {
  apt_repair
  apt_get remove --autoremove "$@" >/dev/null
}
