import Foundation
import ModelFormat
import SystemIO
import ToolSupport

/// Classification metrics that stay honest on imbalanced data: besides accuracy, the mean
/// per-class recall (balanced accuracy, which a majority-class predictor cannot inflate) and
/// macro-F1, with the majority-class baseline printed next to them.
public struct ConfusionMatrix: Equatable, Sendable {
    public let classes: [String]
    /// counts[truth][predicted]
    public private(set) var counts: [[Int]]
    public private(set) var topKCorrect = 0
    public let k: Int
    /// For calibration: each example's top probability over all of the model's classes, whether
    /// that top class was the truth, and the probability given to the truth.
    public private(set) var confidences: [Double] = []
    public private(set) var correct: [Bool] = []
    public private(set) var truthProbabilities: [Double] = []

    public init(classes: [String], k: Int = 3) {
        self.classes = classes
        counts = Array(repeating: Array(repeating: 0, count: classes.count), count: classes.count)
        self.k = k
    }

    public mutating func add(truth: Int, predicted: Int) { counts[truth][predicted] += 1 }

    /// Records one example from its class probabilities (also tracks top-k accuracy).
    public mutating func add(truth: Int, probabilities: [Float]) {
        let order = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1) }
        add(truth: truth, predicted: order[0])
        if order.prefix(k).contains(truth) { topKCorrect += 1 }
    }

    /// Records the model's own answer for calibration (see `confidences`).
    public mutating func addAnswer(confidence: Float, correct right: Bool, truthProbability: Float) {
        confidences.append(Double(confidence))
        correct.append(right)
        truthProbabilities.append(Double(truthProbability))
    }

    public var answers: [(confidence: Double, correct: Bool)] { Array(zip(confidences, correct)).map { ($0, $1) } }
    /// Expected calibration error, 15 equal-width bins (nil without recorded answers).
    public var ece15: Double? { confidences.isEmpty ? nil : Calibration.ece(answers, bins: 15) }
    /// Mean negative log-likelihood of the true class.
    public var nll: Double? {
        truthProbabilities.isEmpty ? nil : truthProbabilities.reduce(0) { $0 - log(max($1, 1e-12)) } / Double(truthProbabilities.count)
    }
    public var meanConfidence: Double? { confidences.isEmpty ? nil : confidences.reduce(0, +) / Double(confidences.count) }
    public static let coverageThresholds = [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]

    public var total: Int { counts.reduce(0) { $0 + $1.reduce(0, +) } }
    public func support(_ c: Int) -> Int { counts[c].reduce(0, +) }
    public func predicted(_ c: Int) -> Int { counts.reduce(0) { $0 + $1[c] } }
    var present: [Int] { classes.indices.filter { support($0) > 0 } }

    public var accuracy: Double { total == 0 ? 0 : Double(classes.indices.reduce(0) { $0 + counts[$1][$1] }) / Double(total) }
    public func recall(_ c: Int) -> Double { support(c) == 0 ? 0 : Double(counts[c][c]) / Double(support(c)) }
    public func precision(_ c: Int) -> Double { predicted(c) == 0 ? 0 : Double(counts[c][c]) / Double(predicted(c)) }
    public func f1(_ c: Int) -> Double {
        let p = precision(c), r = recall(c)
        return p + r == 0 ? 0 : 2 * p * r / (p + r)
    }
    /// Mean recall over the classes that occur in the truth.
    public var balancedAccuracy: Double { present.isEmpty ? 0 : present.map(recall).reduce(0, +) / Double(present.count) }
    /// Mean F1 over the classes that occur in the truth.
    public var macroF1: Double { present.isEmpty ? 0 : present.map(f1).reduce(0, +) / Double(present.count) }
    public var topKAccuracy: Double { total == 0 ? 0 : Double(topKCorrect) / Double(total) }
    /// The accuracy of always answering the largest class.
    public var majorityBaseline: Double { total == 0 ? 0 : Double(classes.indices.map(support).max() ?? 0) / Double(total) }

    /// The metrics, the baseline, the per-class table and the matrix, for people.
    public func report() -> String {
        func pct(_ v: Double) -> String {
            let scaled = Int((v * 1000).rounded())
            return "\(scaled / 10).\(scaled % 10)%"
        }
        var lines = [
            "images             \(total)",
            "accuracy           \(pct(accuracy))   (majority-class baseline \(pct(majorityBaseline)))",
            "balanced accuracy  \(pct(balancedAccuracy))   (chance \(pct(present.isEmpty ? 0 : 1 / Double(present.count))))",
            "macro-F1           \(pct(macroF1))",
            "top-\(k) accuracy     \(pct(topKAccuracy))",
            "",
        ]
        let width = max(10, classes.map(\.count).max() ?? 0)
        lines.append(pad("class", width) + "  precision  recall     F1         support")
        for c in classes.indices {
            lines.append(pad(classes[c], width) + "  " + pad(pct(precision(c)), 9) + "  " + pad(pct(recall(c)), 9) + "  "
                         + pad(pct(f1(c)), 9) + "  " + String(support(c)))
        }
        if let ece15, let nll, let meanConfidence {
            lines.append("")
            lines.append("calibration        ECE (15 bins) \(Format.fixed(ece15, 4)), NLL \(Format.fixed(nll, 4)), mean top probability \(pct(meanConfidence))")
            lines.append("min confidence  answered  accuracy of the answers")
            for row in Calibration.coverage(answers, thresholds: Self.coverageThresholds) {
                lines.append(pad(Format.fixed(row.threshold, 2), 16) + pad(pct(row.coverage), 10) + pct(row.accuracy))
            }
        }
        lines.append("")
        lines.append("confusion matrix (rows: true genre, columns: predicted)")
        let cell = max(6, String(total).count + 1)
        lines.append(pad("", width) + classes.map { padLeft(String($0.prefix(cell - 1)), cell) }.joined())
        for c in classes.indices { lines.append(pad(classes[c], width) + counts[c].map { padLeft(String($0), cell) }.joined()) }
        return lines.joined(separator: "\n")
    }

    public var json: JSON {
        .object([
            "images": JSON(total), "accuracy": .number(accuracy), "balanced_accuracy": .number(balancedAccuracy),
            "macro_f1": .number(macroF1), "top_k": JSON(k), "top_k_accuracy": .number(topKAccuracy),
            "majority_baseline": .number(majorityBaseline), "classes": JSON(classes),
            "per_class": .array(classes.indices.map {
                ["class": .string(classes[$0]), "precision": .number(precision($0)), "recall": .number(recall($0)),
                 "f1": .number(f1($0)), "support": JSON(support($0))]
            }),
            "confusion_matrix": .array(counts.map { JSON($0) }),
            "ece15": ece15.map { .number($0) } ?? .null, "nll": nll.map { .number($0) } ?? .null,
            "mean_confidence": meanConfidence.map { .number($0) } ?? .null,
            "coverage": .array(Calibration.coverage(answers, thresholds: Self.coverageThresholds).map {
                ["min_confidence": .number($0.threshold), "answered": .number($0.coverage), "accuracy": .number($0.accuracy)]
            }),
        ])
    }
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
func padLeft(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
