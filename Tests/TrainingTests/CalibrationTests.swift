import Foundation
import SystemIO
import TestSupport
import Training
import XCTest

/// Temperature scaling and the calibration metrics on synthetic answers whose true calibration
/// is known.
final class CalibrationTests: XCTestCase {
    /// Logits whose true class is drawn from softmax(logits / T): the fit must find T.
    static func samples(count: Int, classes: Int, temperature: Double, views: Int = 1, seed: UInt64) -> [Calibration.Sample] {
        var random = TestRandom(seed: seed)
        return (0..<count).map { _ in
            let z = random.floats(classes, scale: 4)
            let p = Calibration.probabilities(Calibration.Sample(viewLogits: [z], truth: 0), temperature: temperature)
            var u = Double(random.int(0...1_000_000)) / 1_000_000, truth = classes - 1
            for c in 0..<classes {
                u -= p[c]
                if u <= 0 { truth = c; break }
            }
            return Calibration.Sample(viewLogits: Array(repeating: z, count: views), truth: truth)
        }
    }

    func testFitFindsTheTemperatureTheAnswersWereDrawnWith() {
        for truth in [0.5, 1.0, 2.5] {
            let data = Self.samples(count: 4000, classes: 5, temperature: truth, seed: UInt64(truth * 10))
            let fitted = Calibration.fitTemperature(data)
            XCTAssertEqual(fitted, truth, accuracy: truth * 0.15, "temperature \(truth)")
            // The fitted temperature is at least as good as the true one on the data it saw.
            XCTAssertLessThanOrEqual(Calibration.nll(data, temperature: fitted), Calibration.nll(data, temperature: truth) + 1e-9)
            // Calibrated answers have a small ECE; the same logits read at T = 1 do not when T is far from 1.
            XCTAssertLessThan(Calibration.ece(data, temperature: fitted), 0.04)
            if truth != 1 { XCTAssertGreaterThan(Calibration.ece(data, temperature: 1), Calibration.ece(data, temperature: fitted)) }
        }
    }

    func testECEMatchesAHandComputedExample() {
        // Bins of width 1/15: 0.9 and 0.92 share bin 13 (1 of 2 right), 0.3 is alone in bin 4 (right).
        let answers: [(confidence: Double, correct: Bool)] = [(0.9, true), (0.92, false), (0.3, true)]
        let expected = (abs(0.5 - 0.91) * 2 + abs(1 - 0.3)) / 3
        XCTAssertEqual(Calibration.ece(answers, bins: 15), expected, accuracy: 1e-12)
        let table = Calibration.coverage(answers, thresholds: [0, 0.5, 0.99])
        XCTAssertEqual(table.map(\.coverage), [1, 2.0 / 3, 0])
        XCTAssertEqual(table.map(\.accuracy), [2.0 / 3, 0.5, 0])
    }

    func testProbabilitiesAverageTheViews() {
        let sample = Calibration.Sample(viewLogits: [[2, 0], [0, 2]], truth: 0)
        let p = Calibration.probabilities(sample, temperature: 1)
        XCTAssertEqual(p[0], 0.5, accuracy: 1e-12)
        XCTAssertEqual(p[1], 0.5, accuracy: 1e-12)
    }
}
