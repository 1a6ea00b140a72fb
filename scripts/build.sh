#!/usr/bin/env bash
# Builds the release products into build/ (git-ignored):
#   build/lib/libcovergenre.so     the C library, Swift runtime linked in statically
#   build/lib/pkgconfig/covergenre.pc
#   build/include/covergenre.h
#   build/bin/covergenre           the command-line tool
# Usage: scripts/build.sh [--lib-only]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# One release build with the Swift runtime linked statically, so libcovergenre.so loads in any
# C program or Python process without a Swift toolchain on the machine.
swift build -c release -Xswiftc -static-stdlib --product CoverGenreC
if [ "${1:-}" != "--lib-only" ]; then
    swift build -c release -Xswiftc -static-stdlib --product covergenre
fi
release=$(swift build -c release -Xswiftc -static-stdlib --show-bin-path)

mkdir -p build/lib/pkgconfig build/include build/bin
install_file() { # atomic: copy to a temporary name, then rename over the target
    cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}
# SwiftPM names the library after its product (CoverGenreC); C programs link -lcovergenre.
install_file "$release/libCoverGenreC.so" build/lib/libcovergenre.so
install_file include/covergenre.h build/include/covergenre.h
[ -x "$release/covergenre" ] && install_file "$release/covergenre" build/bin/covergenre

cat > build/lib/pkgconfig/covergenre.pc.tmp <<PC
prefix=$root/build
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: covergenre
Description: Predict an album's genre from its cover art
Version: 0.2.0
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lcovergenre
Cflags: -I\${includedir}
PC
mv -f build/lib/pkgconfig/covergenre.pc.tmp build/lib/pkgconfig/covergenre.pc
echo "built: build/lib/libcovergenre.so, build/bin/covergenre (PKG_CONFIG_PATH=$root/build/lib/pkgconfig)"
