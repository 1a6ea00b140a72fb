#!/usr/bin/env bash
# Builds the release products into build/ (git-ignored):
#   build/lib/libcovergenre.so     the C library, Swift runtime linked in statically
#   build/lib/pkgconfig/covergenre.pc
#   build/include/covergenre.h
#   build/bin/covergenre           the command-line tool
#   build/bin/covergenre-server    the HTTP server (`covergenre serve` runs it)
# Usage: scripts/build.sh [--cli | --lib-only]
#   (none)      everything above, in one release build
#   --cli       only the command-line tool: what classifying needs (no SwiftNIO is compiled)
#   --lib-only  only the C library and its header and pkg-config file (the wheel's part)
# Does nothing when the products asked for are newer than every source file.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

what=all
case "${1:-}" in
    "") ;;
    --cli) what=cli ;;
    --lib-only) what=lib ;;
    *) echo "usage: $0 [--cli | --lib-only]" >&2; exit 2 ;;
esac
products=()
case $what in
    all) products=(build/lib/libcovergenre.so build/bin/covergenre build/bin/covergenre-server) ;;
    cli) products=(build/bin/covergenre) ;;
    lib) products=(build/lib/libcovergenre.so) ;;
esac
up_to_date=1
for p in "${products[@]}"; do
    if [ ! -e "$p" ] || [ -n "$(find Sources include Package.swift -newer "$p" -print -quit)" ]; then up_to_date=0; fi
done
if [ $up_to_date = 1 ]; then
    echo "build/ is up to date (${products[*]})"
    exit 0
fi

# The Swift runtime linked statically, so libcovergenre.so loads in any C program or Python
# process, and the tools run, without a Swift toolchain on the machine. One `swift build` for all
# products: each further invocation costs seconds of planning.
echo "building ${products[*]} (release; a first build takes minutes)..." >&2
flags=(-c release -Xswiftc -static-stdlib)
case $what in
    all) swift build "${flags[@]}" ;;
    cli) swift build "${flags[@]}" --product covergenre ;;
    lib) swift build "${flags[@]}" --product CoverGenreC ;;
esac
release=.build/release

mkdir -p build/lib/pkgconfig build/include build/bin
install_file() { # atomic: copy to a temporary name, then rename over the target
    cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}
if [ $what != cli ]; then
    # SwiftPM names the library after its product (CoverGenreC); C programs link -lcovergenre.
    install_file "$release/libCoverGenreC.so" build/lib/libcovergenre.so
    install_file include/covergenre.h build/include/covergenre.h
    cat > build/lib/pkgconfig/covergenre.pc.tmp <<PC
prefix=$root/build
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: covergenre
Description: Predict an album's genre from its cover art
Version: $(scripts/version.sh)
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lcovergenre
Cflags: -I\${includedir}
PC
    mv -f build/lib/pkgconfig/covergenre.pc.tmp build/lib/pkgconfig/covergenre.pc
fi
[ $what != lib ] && install_file "$release/covergenre" build/bin/covergenre
[ $what = all ] && install_file "$release/covergenre-server" build/bin/covergenre-server
echo "built: ${products[*]} (PKG_CONFIG_PATH=$root/build/lib/pkgconfig)"
