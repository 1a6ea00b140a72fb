#if canImport(Glibc)
import Glibc
#endif

/// File access without Foundation (the core library links no Foundation, to stay small when the
/// Swift runtime is linked statically).
public enum Files {
    /// Reads a whole file, refusing more than `maxBytes`.
    public static func read(_ path: String, maxBytes: Int = 1 << 30) throws -> [UInt8] {
        try read(path, maxBytes: maxBytes, unlessHead: 0) { _ in false }!
    }

    /// Reads a whole file, refusing more than `maxBytes`, unless its first `headBytes` bytes make
    /// `stop` true: then nil, and the rest is never read. One open and one pass, so a pipe or a
    /// file being replaced is read once, as it is.
    public static func read(_ path: String, maxBytes: Int, unlessHead headBytes: Int, _ stop: ([UInt8]) -> Bool) throws -> [UInt8]? {
        let (fd, expected) = try openForReading(path)
        defer { close(fd) }
        if headBytes > 0 {
            var head = [UInt8](repeating: 0, count: headBytes)
            var got = 0
            while got < head.count, try readSome(fd, path, into: &head, at: &got) {}
            head.removeSubrange(got...)
            if stop(head) { return nil }
            if got < headBytes { return head }
            return try readRest(fd, path, maxBytes: maxBytes, expected: expected, after: head)
        }
        return try readRest(fd, path, maxBytes: maxBytes, expected: expected, after: [])
    }

    static func readRest(_ fd: Int32, _ path: String, maxBytes: Int, expected: Int, after head: [UInt8]) throws -> [UInt8] {
        if expected > maxBytes {
            throw CoverGenreError(.limitExceeded, "\(path) is \(expected) bytes; the limit is \(maxBytes)")
        }
        // Read until EOF rather than trusting st_size: pipes and growing files report other sizes.
        var bytes = head
        bytes.append(contentsOf: repeatElement(0, count: max(expected - head.count, 0) + 1))
        var filled = head.count
        while true {
            if filled == bytes.count {
                if bytes.count > maxBytes { throw CoverGenreError(.limitExceeded, "\(path) exceeds \(maxBytes) bytes") }
                bytes.append(contentsOf: repeatElement(0, count: max(4096, bytes.count)))
            }
            guard try readSome(fd, path, into: &bytes, at: &filled) else { break }
        }
        if filled > maxBytes { throw CoverGenreError(.limitExceeded, "\(path) exceeds \(maxBytes) bytes") }
        bytes.removeSubrange(filled...)
        return bytes
    }

    /// Writes `bytes` to `path` so that a crash at any moment leaves either the old file or the new
    /// one: a temporary file in the same directory, fsync, rename over the target, fsync the directory.
    public static func writeAtomically(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
        let directory = parentDirectory(path)
        let temporary = "\(directory)/.\(baseName(path)).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CoverGenreError(.io, "cannot create \(temporary): \(errnoText())") }
        var done = false
        defer {
            if !done {
                close(fd)
                unlink(temporary)
            }
        }
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw CoverGenreError(.io, "cannot write \(temporary): \(errnoText())")
            }
            offset += n
        }
        guard fsync(fd) == 0 else { throw CoverGenreError(.io, "cannot sync \(temporary): \(errnoText())") }
        done = true
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw CoverGenreError(.io, "cannot replace \(path): \(reason)")
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    public static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeAtomically(path, $0) }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func parentDirectory(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// An open descriptor of `path` (not a folder) and the size it reports.
    static func openForReading(_ path: String) throws -> (fd: Int32, size: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CoverGenreError(.io, "cannot open \(path): \(errnoText())") }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            close(fd)
            throw CoverGenreError(.io, "cannot stat \(path): \(errnoText())")
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw CoverGenreError(.io, "\(path) is a directory")
        }
        return (fd, Int(info.st_size))
    }

    /// One read() into `bytes` from `filled` on; false at end of file.
    static func readSome(_ fd: Int32, _ path: String, into bytes: inout [UInt8], at filled: inout Int) throws -> Bool {
        while true {
            let start = filled
            let n = bytes.withUnsafeMutableBytes { raw in Glibc.read(fd, raw.baseAddress! + start, raw.count - start) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CoverGenreError(.io, "cannot read \(path): \(errnoText())")
            }
            filled += n
            return n > 0
        }
    }

    public static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// A read-only memory map of a whole file. Model weights are used straight from the map (f32
/// files) or packed from it, never copied through a read buffer.
///
/// The map is private and read-only; if another process truncates the file while it is mapped,
/// the OS may raise SIGBUS on access, as with every memory-mapped reader (llama.cpp, ONNX Runtime).
public final class MappedFile: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    private let length: Int

    public init(path: String, maxBytes: Int) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CoverGenreError(.io, "cannot open \(path): \(Files.errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw CoverGenreError(.io, "cannot stat \(path): \(Files.errnoText())") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw CoverGenreError(.io, "\(path) is not a regular file") }
        let size = Int(info.st_size)
        if size > maxBytes { throw CoverGenreError(.limitExceeded, "\(path) is \(size) bytes; the limit is \(maxBytes)") }
        length = size
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        // Every byte is read at load (checksum, weights packed), so the pages are mapped in one
        // call rather than faulted in 16 at a time: 9.7 MB took about 2,400 faults.
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0), base != MAP_FAILED else {
            throw CoverGenreError(.io, "cannot map \(path): \(Files.errnoText())")
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), length) }
    }
}
