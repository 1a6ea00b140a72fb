import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// `covergenre serve ...` runs `covergenre-server ...`, the program beside this one, with the same
/// arguments (as `git foo` runs `git-foo`). The HTTP server is a program of its own so that this
/// tool, and everything that only classifies, never compiles or links SwiftNIO; scripts/build.sh
/// builds both, and `covergenre serve --help` shows the server's options.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the models over HTTP: a JSON API (docs/http-api.md) and a web page for tagging covers.",
        discussion: "Runs covergenre-server from the folder of this program; `covergenre serve --help` lists its options.",
        // --help belongs to the server, which knows the options.
        helpNames: [])

    @Argument(parsing: .captureForPassthrough, help: "covergenre-server's options.")
    var arguments: [String] = []

    func run() throws {
        let server = Serve.serverPath()
        guard access(server, X_OK) == 0 else {
            throw CLIError("covergenre serve runs \(server), which is not there: build it with scripts/build.sh (or install covergenre-server beside covergenre)")
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([server] + arguments).map { strdup($0) } + [nil]
        execv(server, argv)
        throw CLIError("could not run \(server): \(String(cString: strerror(errno)))")
    }

    /// covergenre-server in the folder of the running executable (symbolic links resolved).
    static func serverPath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let me = n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
        let folder = me.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return (folder.isEmpty ? "." : folder) + "/covergenre-server"
    }
}
