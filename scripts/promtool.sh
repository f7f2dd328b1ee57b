#!/usr/bin/env bash
# Print the path of a promtool (and, beside it, prometheus) from Debian's prometheus package,
# unpacked into .cache/prometheus/ of this checkout: `apt-get download` and `dpkg-deb -x`,
# never `apt-get install`, whose maintainer scripts add a prometheus user and start a
# service. Used by .ci/run (promtool check rules, promtool test rules).
# Fails, never skips, when the package cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
folder=.cache/prometheus
if [ ! -x "$folder/usr/bin/promtool" ]; then
    rm -rf "$folder"
    mkdir -p "$folder"
    if ! (cd "$folder" && apt-get download prometheus >/dev/null 2>&1); then
        apt-get update -qq >/dev/null  # a machine whose package lists were never fetched
        (cd "$folder" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$folder"/prometheus_*.deb "$folder"
    rm -f "$folder"/prometheus_*.deb
fi
echo "$PWD/$folder/usr/bin/promtool"
