import CCoverGenreAPI
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// The per-thread last-error message behind cg_last_error (stb_image's failure_reason, made
/// thread-safe). The pthread key is created once; each thread's message is freed when the thread
/// exits or its next error replaces it.
enum ErrorState {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    private static let empty: UnsafePointer<CChar> = UnsafePointer(strdup("")!)

    static func set(_ message: String) {
        let copy = strdup(message)
        let old = pthread_getspecific(key)
        pthread_setspecific(key, copy)
        free(old)
    }

    static var current: UnsafePointer<CChar> {
        guard let value = pthread_getspecific(key) else { return empty }
        return UnsafePointer(value.assumingMemoryBound(to: CChar.self))
    }

    /// Records the error and returns its status.
    static func fail(_ error: Error) -> cg_status {
        let e = error as? CoverGenreError ?? CoverGenreError(.internal, "\(error)")
        set(e.message)
        return cg_status(rawValue: UInt32(e.code.rawValue))
    }

    static func fail(_ code: CoverGenreError.Code, _ message: String) -> cg_status {
        fail(CoverGenreError(code, message))
    }

    /// Runs `body`, turning any thrown error into a status and a message.
    static func guarded(_ body: () throws -> Void) -> cg_status {
        do {
            try body()
            return CG_OK
        } catch {
            return fail(error)
        }
    }
}
