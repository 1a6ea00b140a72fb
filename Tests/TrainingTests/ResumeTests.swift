import ImageIO
import ModelFormat
import SystemIO
import TestSupport
import ToolSupport
import Training
import XCTest

/// A run stopped after an epoch and resumed ends with exactly the weights of a run that never
/// stopped: the order, augmentation and dropout of each epoch come from (seed, epoch), and the
/// checkpoint holds the weights, running statistics, optimizer moments and step count.
final class ResumeTests: XCTestCase {
    func makeDataset() throws -> String {
        let root = temporaryDirectory()
        var random = TestRandom(seed: 2)
        for (g, base) in [("warm", (200, 90, 40)), ("cold", (40, 90, 200))].enumerated() {
            let dir = Files.join(root, base.0)
            try Files.makeDirectories(dir)
            for i in 0..<14 {
                let rgb = (0..<(20 * 20 * 3)).map { k -> UInt8 in
                    let channel = [base.1.0, base.1.1, base.1.2][k % 3]
                    return UInt8(max(0, min(255, channel + random.int(-50...50))))
                }
                try Files.writeAtomically(Files.join(dir, "\(g)-\(i).png"), try ImageEncoder.png(rgb, width: 20, height: 20))
            }
        }
        // One undecodable file: reported once and skipped, never fatal.
        try Files.writeAtomically(Files.join(root, "warm/broken.jpg"), Array("not really a jpeg".utf8))
        return root
    }

    func configuration() -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.architecture = "baseline-cnn"
        c.inputSize = 32
        c.widthDivisor = 16
        c.batchNorm = true
        c.dropout = 0.3
        c.batchSize = 4
        c.epochs = 3
        c.augment = true
        c.balance = .sampler
        c.optimizer = .adamw
        c.weightDecay = 0.01
        c.schedule = .cosine
        c.learningRate = 0.003
        c.threads = 2
        return c
    }

    func train(_ data: String, stopAfter: Int? = nil, resume: Bool, run: String) throws -> [String: HostTensorValues] {
        var logs: [String] = []
        let trainer = Trainer(configuration: configuration(), dataset: try LabeledDataset.load(data), runDirectory: run,
                              output: Files.join(run, "model.cgm"), log: { logs.append($0) })
        try trainer.run(resume: resume, stopAfter: stopAfter)
        XCTAssertEqual(logs.filter { $0.contains("broken.jpg") }.count, 1, "reported once per run: \(logs)")
        let file = try ModelFile(path: Files.join(run, "checkpoint.cgm"))
        var out: [String: HostTensorValues] = [:]
        for t in file.tensors { out[t.name] = try file.floats(t.name).array }
        return out
    }

    func testKilledAfterAnEpochAndResumedEqualsUninterrupted() throws {
        let data = try makeDataset()
        let straight = try train(data, resume: false, run: temporaryDirectory())
        let interruptedRun = temporaryDirectory()
        _ = try train(data, stopAfter: 1, resume: false, run: interruptedRun) // stops as if killed after epoch 1
        let resumed = try train(data, resume: true, run: interruptedRun)
        XCTAssertEqual(Set(straight.keys), Set(resumed.keys))
        for (name, values) in straight { XCTAssertEqual(values, resumed[name], name) }
        let history = try CSV.readTable(Files.join(interruptedRun, "history.csv"))
        XCTAssertEqual(history.rows.map { $0["epoch"]! }, ["1", "2", "3"])
        XCTAssertTrue(Files.exists(Files.join(interruptedRun, "curves.png")))
        XCTAssertTrue(Files.exists(Files.join(interruptedRun, "split.csv")))
    }
}

func temporaryDirectory() -> String {
    var template = Array("/tmp/covergenre-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
}
