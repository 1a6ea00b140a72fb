#!/usr/bin/env bash
# Prints CoverGenre's one version number, MAJOR.MINOR.PATCH, from include/covergenre.h (the
# CG_API_VERSION_* macros): the library, the tools, pkg-config, the SONAME and the wheel use it.
set -euo pipefail
cd "$(dirname "$0")/.."
v() { sed -n "s/^#define CG_API_VERSION_$1 \\([0-9]*\\)\$/\\1/p" include/covergenre.h; }
major=$(v MAJOR) minor=$(v MINOR) patch=$(v PATCH)
[ -n "$major" ] && [ -n "$minor" ] && [ -n "$patch" ] || { echo "no CG_API_VERSION_* in include/covergenre.h" >&2; exit 1; }
echo "$major.$minor.$patch"
