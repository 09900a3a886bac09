#!/usr/bin/env bash
# System tools the tests drive for real: adb (Android Debug Bridge), OpenSSH server/client, Chromium.
# Installs what is missing with apt-get when run as root; otherwise says what to install.
set -euo pipefail
need=()
command -v adb >/dev/null 2>&1 || need+=(adb)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  echo "[system-tools] adb, sshd, ssh and chromium are present"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[system-tools] installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "[system-tools] missing: ${need[*]} (install them to run the device and report tests; they are skipped otherwise)"
fi
