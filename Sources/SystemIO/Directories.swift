#if canImport(Glibc)
import Glibc
#endif

extension Files {
    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    public static func size(_ path: String) -> Int? {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : nil
    }

    /// Names in a directory (no "." or ".."), sorted so that listings are reproducible.
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw CoverGenreError(.io, "cannot list \(path): \(errnoText())") }
        defer { closedir(dir) }
        var names: [String] = []
        // The name is read in place, up to its terminator. `entry.pointee.d_name` would copy all
        // 256 bytes of the field, but the kernel packs records by their real length (d_reclen):
        // for the last entry of readdir's buffer that copy read past the buffer's end, and when
        // the buffer ended at a page boundary the process crashed (seen listing a 900-file folder).
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        while let entry = readdir(dir) {
            let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// mkdir -p.
    public static func makeDirectories(_ path: String) throws {
        if path.isEmpty || isDirectory(path) { return }
        let parent = parentDirectory(path)
        if parent != path && !parent.isEmpty && parent != "." { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw CoverGenreError(.io, "cannot create \(path): \(errnoText())") }
    }

    public static func remove(_ path: String) { unlink(path) }

    public static func join(_ a: String, _ b: String) -> String {
        if b.hasPrefix("/") || a.isEmpty { return b }
        return a.hasSuffix("/") ? a + b : a + "/" + b
    }
}

extension Files {
    /// A genre or id as one safe path component: letters, digits, space, '&', '.', '-' and '_'
    /// are kept, anything else (separators, quotes, control characters) becomes '_', and a name of
    /// only dots becomes "_". `covergenre download` stores covers under these names and the
    /// dataset loader looks them up the same way.
    public static func safeComponent(_ s: String) -> String {
        let mapped = String(s.unicodeScalars.map { c -> Character in
            let ok = c.properties.isAlphabetic || c.properties.numericType != nil || " &.-_".unicodeScalars.contains(c)
            return ok && c.value >= 0x20 ? Character(c) : "_"
        })
        return mapped.isEmpty || mapped.allSatisfy({ $0 == "." }) ? "_" : mapped
    }
}
