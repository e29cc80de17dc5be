#!/usr/bin/env bash
# Fetches the network-boot binaries named in firmware/manifest.toml from Debian's packages
# (apt-get download; nothing is installed) and checks each against its sha256.
#
# Each entry names its Debian suite (bookworm when absent). The packages are fetched through a
# private apt state for exactly those suites, signed by the Debian archive keyring, so the
# host's own sources.list is neither used nor changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "firmware: $keyring is missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 - "$here/manifest.toml" > plan.txt <<'PY'
import sys, tomllib
for b in tomllib.load(open(sys.argv[1], "rb"))["binary"]:
    print(b.get("suite", "bookworm"), b["package"], b["version"], b["path"], b["name"], b["sha256"])
PY
mkdir -p apt/lists/partial apt/cache/archives/partial
cut -d' ' -f1 plan.txt | sort -u | while read -r suite; do
  echo "deb [signed-by=$keyring] $mirror $suite main"
done > apt/sources.list
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update >/dev/null
while read -r suite package version path name sha; do
  deb=$(ls "${package}_${version//:/%3a}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    apt-get "${apt_opts[@]}" download "${package}=${version}" >/dev/null
    deb=$(ls "${package}_${version//:/%3a}"_*.deb | head -1)
    dpkg-deb -x "$deb" "x-$package-$version"
  fi
  cp -L "x-$package-$version/$path" "$here/$name.tmp"
  got=$(sha256sum "$here/$name.tmp" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    rm -f "$here/$name.tmp"
    echo "firmware: $name from $package $version ($suite) has sha256 $got, manifest says $sha" >&2
    exit 1
  fi
  mv "$here/$name.tmp" "$here/$name"
  echo "firmware: $name ok ($package $version, $suite)"
done < plan.txt
