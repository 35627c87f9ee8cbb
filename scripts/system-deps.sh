#!/usr/bin/env bash
# Installs the system tools cpinspect's tests use. As root it installs what is missing with
# apt-get; otherwise it only says what is missing (the tests that need it then skip, except in CI).
set -u
need=()
command -v gdb >/dev/null 2>&1 || need+=(gdb)
{ command -v setpriv && command -v unshare; } >/dev/null 2>&1 || need+=(util-linux)  # setpriv, unshare
command -v chroot >/dev/null 2>&1 || need+=(coreutils)
command -v useradd >/dev/null 2>&1 || need+=(passwd)
command -v memcached >/dev/null 2>&1 || need+=(memcached)  # the memcached sessions tests
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "note: missing system tools (${need[*]}); install them for the full test suite" >&2
fi
exit 0
