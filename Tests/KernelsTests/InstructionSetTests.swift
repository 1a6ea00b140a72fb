import Kernels
import XCTest

/// Which kernel variant this run tested. scripts/test.sh runs the kernel, inference and resampling
/// tests once per variant the CPU executes (COVERGENRE_ISA=generic, avx2, avx512); this test makes
/// each run say which variant ran and fail when it is not the one asked for.
final class InstructionSetTests: XCTestCase {
    func testTheVariantAskedForIsTheOneThatRuns() throws {
        let current = InstructionSet.current, best = InstructionSet.best
        let environment = ProcessInfo.processInfo.environment["COVERGENRE_ISA"]
        print("kernel variant: \(current) (this CPU executes up to \(best); COVERGENRE_ISA=\(environment ?? "unset"))")
        XCTAssertLessThanOrEqual(current.rawValue, best.rawValue, "a variant the CPU cannot execute was chosen")
        guard let environment else {
            XCTAssertEqual(current, best, "without COVERGENRE_ISA the best variant runs")
            return
        }
        let requested = try XCTUnwrap(InstructionSet.requested, "COVERGENRE_ISA=\(environment) names no variant")
        if requested.rawValue > best.rawValue {
            throw XCTSkip("COVERGENRE_ISA=\(requested): this CPU cannot execute it, so the \(current) variant ran instead")
        }
        XCTAssertEqual(current, requested)
    }

    func testVariantNamesRoundTrip() {
        XCTAssertEqual(InstructionSet.allCases.map(\.description), ["generic", "avx2", "avx512"])
    }
}
