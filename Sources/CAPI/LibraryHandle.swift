import CCoverGenreAPI
import MusicLibrary
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// What a `cg_library *` points to: the albums of a folder, read once, and the C strings handed
/// out for them, which live exactly as long as the handle.
final class LibraryHandle {
    let albums: [Album]
    /// Per album: folder, album artist, album, cover path (NULLs where absent), then its genres
    /// and its tracks.
    let strings: [(fields: [UnsafeMutablePointer<CChar>?], genres: [UnsafePointer<CChar>?], tracks: [UnsafePointer<CChar>?])]

    init(albums: [Album]) {
        self.albums = albums
        strings = albums.map { album in
            (fields: [strdup(album.folder), album.albumArtist.map { strdup($0) }, album.title.map { strdup($0) },
                      album.cover.map { strdup($0.path) }],
             genres: album.genres.map { UnsafePointer(strdup($0)) },
             tracks: album.tracks.map { UnsafePointer(strdup($0)) })
        }
    }

    deinit {
        for s in strings {
            s.fields.forEach { free($0) }
            s.genres.forEach { free(UnsafeMutableRawPointer(mutating: $0)) }
            s.tracks.forEach { free(UnsafeMutableRawPointer(mutating: $0)) }
        }
    }

    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passRetained(self).toOpaque()) }

    static func from(_ pointer: OpaquePointer?) -> LibraryHandle? {
        pointer.map { Unmanaged<LibraryHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }

    static func release(_ pointer: OpaquePointer) {
        Unmanaged<LibraryHandle>.fromOpaque(UnsafeRawPointer(pointer)).release()
    }
}

@_cdecl("cg_library_open")
public func cg_library_open(_ folder: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    guard let out else { return ErrorState.fail(.invalidArgument, "out_library is NULL") }
    out.pointee = nil
    return ErrorState.guarded {
        guard let folder else { throw CoverGenreError(.invalidArgument, "folder is NULL") }
        out.pointee = LibraryHandle(albums: try MusicLibrary.albums(under: String(cString: folder))).opaque
    }
}

@_cdecl("cg_library_album_count")
public func cg_library_album_count(_ library: OpaquePointer?) -> Int { LibraryHandle.from(library)?.albums.count ?? 0 }

@_cdecl("cg_library_album")
public func cg_library_album(_ library: OpaquePointer?, _ index: UInt, _ out: UnsafeMutablePointer<cg_album>?) -> cg_status {
    guard let handle = LibraryHandle.from(library) else { return ErrorState.fail(.invalidArgument, "library is NULL") }
    guard let out else { return ErrorState.fail(.invalidArgument, "out_album is NULL") }
    guard index < UInt(handle.albums.count) else {
        return ErrorState.fail(.invalidArgument, "album index \(index) is out of range (the library has \(handle.albums.count))")
    }
    let album = handle.albums[Int(index)], s = handle.strings[Int(index)]
    out.pointee = cg_album(
        folder: UnsafePointer(s.fields[0]), album_artist: UnsafePointer(s.fields[1]), album: UnsafePointer(s.fields[2]),
        cover_path: UnsafePointer(s.fields[3]),
        cover_source: album.cover.map { $0.kind == "file" ? CG_COVER_FILE : CG_COVER_EMBEDDED } ?? CG_COVER_NONE,
        genre_count: s.genres.count, track_count: s.tracks.count)
    return CG_OK
}

@_cdecl("cg_library_album_genre")
public func cg_library_album_genre(_ library: OpaquePointer?, _ album: UInt, _ index: UInt) -> UnsafePointer<CChar>? {
    guard let handle = LibraryHandle.from(library), album < UInt(handle.albums.count) else { return nil }
    let genres = handle.strings[Int(album)].genres
    return index < UInt(genres.count) ? genres[Int(index)] : nil
}

@_cdecl("cg_library_album_track")
public func cg_library_album_track(_ library: OpaquePointer?, _ album: UInt, _ index: UInt) -> UnsafePointer<CChar>? {
    guard let handle = LibraryHandle.from(library), album < UInt(handle.albums.count) else { return nil }
    let tracks = handle.strings[Int(album)].tracks
    return index < UInt(tracks.count) ? tracks[Int(index)] : nil
}

@_cdecl("cg_library_free")
public func cg_library_free(_ library: OpaquePointer?) {
    if let library { LibraryHandle.release(library) }
}
