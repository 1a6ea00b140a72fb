#!/usr/bin/env bash
# Installs the C library, its header, pkg-config and CMake files, the command-line tool and the
# default model into a prefix, as `make install` would:
#   scripts/install.sh [--prefix DIR]        (default /usr/local)
#     DIR/lib/libcovergenre.so.2.0.0   SONAME libcovergenre.so.2, with the .so.2 and .so links
#     DIR/include/covergenre.h
#     DIR/lib/pkgconfig/covergenre.pc  pkg-config --cflags --libs covergenre
#     DIR/lib/cmake/covergenre/        find_package(covergenre) -> covergenre::covergenre
#     DIR/bin/covergenre, DIR/bin/covergenre-server (what `covergenre serve` runs)
#     DIR/share/covergenre/covergenre-default-int8.cgm (the default), covergenre-default.cgm (the
#     same model in floating point), and their model card
# Builds first (scripts/build.sh). Every file is written to a temporary name and renamed into
# place, so an interrupted install never leaves a half-written library. The library carries the
# Swift runtime; it needs only OpenBLAS, libjpeg, libpng and libwebp from the system.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        *) echo "usage: $0 [--prefix DIR]" >&2; exit 2 ;;
    esac
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

# The version: the header's API version (the SONAME's number is its major).
version=$(scripts/version.sh)
major=${version%%.*}
command -v patchelf >/dev/null || scripts/setup.sh --system >&2

scripts/build.sh >&2

install_file() { # SOURCE TARGET MODE: copy to a temporary name beside the target, then rename
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.tmp.$$"
    chmod "$3" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
}
install_text() { # TARGET: standard input to TARGET, atomically
    mkdir -p "$(dirname "$1")"
    cat > "$1.tmp.$$"
    chmod 644 "$1.tmp.$$"
    mv -f "$1.tmp.$$" "$1"
}
link() { # TARGET NAME: a symbolic link replaced atomically
    ln -sfn "$1" "$2.tmp.$$"
    mv -Tf "$2.tmp.$$" "$2"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp build/lib/libcovergenre.so "$work/libcovergenre.so.$version"
patchelf --set-soname "libcovergenre.so.$major" "$work/libcovergenre.so.$version"
install_file "$work/libcovergenre.so.$version" "$prefix/lib/libcovergenre.so.$version" 755
link "libcovergenre.so.$version" "$prefix/lib/libcovergenre.so.$major"
link "libcovergenre.so.$major" "$prefix/lib/libcovergenre.so"
install_file include/covergenre.h "$prefix/include/covergenre.h" 644
install_file build/bin/covergenre "$prefix/bin/covergenre" 755
install_file build/bin/covergenre-server "$prefix/bin/covergenre-server" 755
install_file models/covergenre-default-int8.cgm "$prefix/share/covergenre/covergenre-default-int8.cgm" 644
install_file models/covergenre-default.cgm "$prefix/share/covergenre/covergenre-default.cgm" 644
install_file models/README.md "$prefix/share/covergenre/README.md" 644

install_text "$prefix/lib/pkgconfig/covergenre.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include
datadir=\${prefix}/share/covergenre

Name: covergenre
Description: Predict an album's genre from its cover art
Version: $version
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lcovergenre
Cflags: -I\${includedir}
PC

# Relocatable: the prefix is found from this file's own location.
install_text "$prefix/lib/cmake/covergenre/covergenreConfig.cmake" <<CMAKE
# covergenre's CMake package: find_package(covergenre) then
# target_link_libraries(app PRIVATE covergenre::covergenre).
get_filename_component(_covergenre_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET covergenre::covergenre)
    add_library(covergenre::covergenre SHARED IMPORTED)
    set_target_properties(covergenre::covergenre PROPERTIES
        IMPORTED_LOCATION "\${_covergenre_prefix}/lib/libcovergenre.so.$version"
        IMPORTED_SONAME "libcovergenre.so.$major"
        INTERFACE_INCLUDE_DIRECTORIES "\${_covergenre_prefix}/include")
endif()
set(covergenre_VERSION "$version")
set(covergenre_DEFAULT_MODEL "\${_covergenre_prefix}/share/covergenre/covergenre-default-int8.cgm")
set(covergenre_FLOAT_MODEL "\${_covergenre_prefix}/share/covergenre/covergenre-default.cgm")
unset(_covergenre_prefix)
CMAKE
install_text "$prefix/lib/cmake/covergenre/covergenreConfigVersion.cmake" <<CMAKE
# Compatible when the major versions match and the installed one is at least the one asked for.
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION_MAJOR AND NOT PACKAGE_FIND_VERSION_MAJOR EQUAL $major)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
        set(PACKAGE_VERSION_EXACT TRUE)
    endif()
endif()
CMAKE
echo "installed covergenre $version into $prefix"
