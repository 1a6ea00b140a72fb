import Importers
import SystemIO
import XCTest

/// The restricted unpickler on hand-assembled pickles: what torch.save writes is read, anything
/// that could execute code or exhaust memory is refused with a reason.
final class PickleTests: XCTestCase {
    func load(_ bytes: [UInt8]) throws -> PickleValue {
        try bytes.withUnsafeBytes { raw in
            var unpickler = RestrictedUnpickler(bytes: raw)
            return try unpickler.load()
        }
    }

    func assertRefused(_ bytes: [UInt8], containing text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(bytes), file: file, line: line) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .modelFormat, file: file, line: line)
            XCTAssertTrue(text.isEmpty || "\(error)".contains(text), "\(error)", file: file, line: line)
        }
    }

    static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }
    static func shortString(_ s: String) -> [UInt8] { [0x8C, UInt8(s.utf8.count)] + Array(s.utf8) }

    func testOrderedDictWithMemoAndIntegers() throws {
        // OrderedDict() then SETITEMS {"a": 1, "b": -2, "c": memo[0] (the key "a")}.
        var p: [UInt8] = [0x80, 0x02] + Self.global("collections", "OrderedDict") + [0x29, 0x52, 0x28]
        p += Self.shortString("a") + [0x71, 0x00] + [0x4B, 0x01]        // "a" memoized as 0, 1
        p += Self.shortString("b") + [0x8A, 0x01, 0xFE]                  // LONG1 -2
        p += Self.shortString("c") + [0x68, 0x00]                        // BINGET 0
        p += [0x75, 0x2E]
        guard case .dict(let d) = try load(p) else { return XCTFail("not a dict") }
        XCTAssertEqual(d.keys.compactMap(\.string), ["a", "b", "c"])
        XCTAssertEqual(d.values[0].int, 1)
        XCTAssertEqual(d.values[1].int, -2)
        XCTAssertEqual(d.values[2].string, "a")
    }

    /// A list appended to itself (EMPTY_LIST, BINPUT 0, BINGET 0, APPEND): refused, and (the
    /// fuzzer's finding) the cycle is broken so nothing leaks; also when the cycle is discarded
    /// and something else returned.
    func testContainersHoldingThemselvesAreRefusedOrDropped() throws {
        try [UInt8]([0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E]).withUnsafeBytes { raw in
            var unpickler = RestrictedUnpickler(bytes: raw)
            XCTAssertThrowsError(try unpickler.load()) { XCTAssertTrue("\($0)".contains("reference cycle"), "\($0)") }
        }
        // The same cycle popped off the stack before STOP returns None.
        let value = try load([0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x30, 0x4E, 0x2E])
        guard case .none = value else { return XCTFail("\(value)") }
        // A list inside a list inside the first: refused (the first is changed after being nested).
        assertRefused([0x80, 0x02, 0x5D, 0x71, 0x00, 0x5D, 0x68, 0x00, 0x61, 0x61, 0x2E], containing: "already placed inside")
        // Sharing without a cycle is fine: the same list twice in a tuple.
        let shared = try load([0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x86, 0x2E])
        guard case .tuple(let items) = shared, case .list(let a) = items[0], case .list(let b) = items[1] else { return XCTFail() }
        XCTAssertTrue(a === b)
    }

    /// Values nested deeper than `maxNesting` are refused as they are built: releasing one
    /// recurses once per level, and the torch fuzz target's 37,000 nested 1-tuples (a 38 KB
    /// pickle, `fuzz/regressions/torch/crash-6117...`) overflowed the stack.
    func testDeepNestingIsRefusedBeforeItCanOverflowTheStack() throws {
        // None wrapped in 100,000 1-tuples (TUPLE1).
        assertRefused([0x80, 0x02, 0x4E] + [UInt8](repeating: 0x85, count: 100_000) + [0x2E], containing: "nested deeper than 256")
        // None wrapped in 50,000 lists (MARK ... LIST, innermost first).
        let marks = [UInt8](repeating: 0x28, count: 50_000), lists = [UInt8](repeating: 0x6C, count: 50_000)
        assertRefused([0x80, 0x02] + marks + [0x4E] + lists + [0x2E], containing: "nested deeper than 256")
        // Shared pairs (DUP, TUPLE2): few bytes, exponentially many paths, still one level each.
        assertRefused([0x80, 0x02, 0x4E] + Array([[UInt8]](repeating: [0x32, 0x86], count: 1_000).joined()) + [0x2E],
                      containing: "nested deeper than 256")
        // Lists filled top-down through the memo (a list changed after being nested) are refused:
        // their depth could no longer be known without walking them.
        assertRefused([0x80, 0x02, 0x5D, 0x71, 0x00, 0x5D, 0x71, 0x01, 0x61, 0x68, 0x01, 0x5D, 0x61, 0x30, 0x68, 0x00, 0x2E],
                      containing: "already placed inside")
        // 200 levels are fine, and come back as built.
        var value = try load([0x80, 0x02, 0x4B, 0x07] + [UInt8](repeating: 0x85, count: 200) + [0x2E])
        var levels = 0
        while case .tuple(let items) = value {
            levels += 1
            value = items[0]
        }
        XCTAssertEqual(levels, 200)
        XCTAssertEqual(value.int, 7)
    }

    func testCodeExecutionGlobalsAreRefused() {
        // The classic exploit: os.system("...") via GLOBAL + REDUCE.
        let exploit: [UInt8] = [0x80, 0x02] + Self.global("os", "system") + Self.shortString("echo pwned") + [0x85, 0x52, 0x2E]
        assertRefused(exploit, containing: "os.system")
        assertRefused([0x80, 0x02] + Self.global("builtins", "eval") + [0x2E], containing: "builtins.eval")
        assertRefused([0x80, 0x04] + Self.shortString("subprocess") + Self.shortString("Popen") + [0x93, 0x2E], containing: "subprocess.Popen")
        // A torch name that is not on the allow-list is refused too.
        assertRefused([0x80, 0x02] + Self.global("torch.nn.modules.linear", "Linear") + [0x2E], containing: "torch.nn.modules.linear.Linear")
    }

    func testOpcodesOutsideTheSubsetAreRefused() {
        assertRefused([0x80, 0x02, 0x69] + Array("os\nsystem\n".utf8), containing: "0x69")   // INST
        assertRefused([0x80, 0x02, 0x6F, 0x2E], containing: "0x6f")                         // OBJ
        assertRefused([0x80, 0x02, 0x82, 0x01, 0x2E], containing: "0x82")                   // EXT1
    }

    func testMalformedPicklesAreErrors() {
        assertRefused([], containing: "ends")
        assertRefused([0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F], containing: "")          // string longer than the data
        assertRefused([0x80, 0x02, 0x2E], containing: "underflow")                          // STOP on empty stack
        assertRefused([0x80, 0x02, 0x68, 0x05, 0x2E], containing: "memo")                   // BINGET of nothing
        assertRefused([0x80, 0x02, 0x74, 0x2E], containing: "MARK")                         // TUPLE without MARK
        assertRefused([0x80, 0x02, 0x4B, 0x01, 0x75, 0x2E], containing: "MARK")
        assertRefused([0x80, 0x02, 0x51, 0x2E], containing: "")                             // persistent id without resolver
        // REDUCE of a plain value (not a callable global).
        assertRefused([0x80, 0x02, 0x4B, 0x01, 0x29, 0x52, 0x2E], containing: "REDUCE")
    }

    func testTensorRebuildNeedsAConsistentStorage() {
        // _rebuild_tensor_v2 with a non-storage first argument.
        var p: [UInt8] = [0x80, 0x02] + Self.global("torch._utils", "_rebuild_tensor_v2") + [0x28]
        p += [0x4B, 0x00, 0x4B, 0x00, 0x4B, 0x02, 0x85, 0x4B, 0x01, 0x85, 0x89, 0x4E, 0x74, 0x52, 0x2E]
        assertRefused(p, containing: "malformed tensor")
    }

    func testCheckpointContainersRejectGarbage() {
        for bytes: [UInt8] in [[], [0x50, 0x4B, 0x03, 0x04], Array("hello".utf8), [0x80, 0x02, 0x2E]] {
            XCTAssertThrowsError(try bytes.withUnsafeBytes { try TorchCheckpoint.read($0) })
        }
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 7).withUnsafeBytes { try SafeTensors.read($0) })
        // Header length pointing past the end.
        XCTAssertThrowsError(try ([0xFF, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)).withUnsafeBytes { try SafeTensors.read($0) })
    }
}
