#!/usr/bin/env bash
# Fetches the network-boot binaries named in firmware/manifest.toml from Debian's packages
# (apt-get download; nothing is installed) and checks each against its sha256.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 - "$here/manifest.toml" > plan.txt <<'PY'
import sys, tomllib
for b in tomllib.load(open(sys.argv[1], "rb"))["binary"]:
    print(b["package"], b["version"], b["path"], b["name"], b["sha256"])
PY
while read -r package version path name sha; do
  deb=$(ls "${package}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    apt-get download "${package}=${version}" >/dev/null
    deb=$(ls "${package}"_*.deb | head -1)
    dpkg-deb -x "$deb" "x-$package"
  fi
  cp -L "x-$package/$path" "$here/$name.tmp"
  got=$(sha256sum "$here/$name.tmp" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    rm -f "$here/$name.tmp"
    echo "firmware: $name from $package $version has sha256 $got, manifest says $sha" >&2
    exit 1
  fi
  mv "$here/$name.tmp" "$here/$name"
  echo "firmware: $name ok ($sha)"
done < plan.txt
