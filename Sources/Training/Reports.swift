import Graph
import ModelFormat
import SystemIO
import ToolSupport

/// Files a run leaves for people: history.csv and curves.png, confusion matrices as text,
/// JSON and a PNG heat map.
public enum Reports {
    public static func writeHistory(_ history: [EpochRecord], to directory: String) throws {
        try CSV.write(Files.join(directory, "history.csv"), [EpochRecord.header] + history.map(\.row))
        try Files.writeAtomically(Files.join(directory, "curves.png"), try curves(history))
    }

    /// `<base>.txt`, `<base>.json` and `<base>.png`.
    public static func writeConfusion(_ matrix: ConfusionMatrix, to base: String) throws {
        try Files.writeAtomically(base + ".txt", Array((matrix.report() + "\n").utf8))
        try Files.writeAtomically(base + ".json", Array((matrix.json.pretty + "\n").utf8))
        try Files.writeAtomically(base + ".png", try heatMap(matrix))
    }

    /// Rows are true genres, columns predictions; each cell shows its count and is shaded by the
    /// share of its row (so the diagonal shows per-class recall whatever the class sizes).
    public static func heatMap(_ matrix: ConfusionMatrix) throws -> [UInt8] {
        let k = matrix.classes.count
        let cell = 56, labelWidth = max(Canvas.textWidth(String(repeating: "X", count: min(14, matrix.classes.map(\.count).max() ?? 1))) + 12, 60)
        let top = 40
        let footer = "ACCURACY \(Format.percent(matrix.accuracy))  BALANCED \(Format.percent(matrix.balancedAccuracy))  MACRO-F1 \(Format.percent(matrix.macroF1))"
        var canvas = Canvas(width: max(labelWidth + k * cell + 10, Canvas.textWidth(footer) + 12), height: top + k * cell + 24)
        canvas.text("TRUE (ROWS) / PREDICTED (COLUMNS)", x: 6, y: 6)
        for c in 0..<k {
            canvas.text(String(matrix.classes[c].prefix(8)), x: labelWidth + c * cell + 3, y: top - 14)
            canvas.text(String(matrix.classes[c].prefix(14)), x: 6, y: top + c * cell + cell / 2 - 3)
        }
        for r in 0..<k {
            let support = max(matrix.support(r), 1)
            for c in 0..<k {
                let share = Double(matrix.counts[r][c]) / Double(support)
                let shade = UInt8(255 - Int(share * 200))
                let color: (UInt8, UInt8, UInt8) = r == c ? (shade, shade, 255) : (255, shade, shade)
                canvas.fill(x: labelWidth + c * cell + 1, y: top + r * cell + 1, w: cell - 2, h: cell - 2, color: color)
                let text = String(matrix.counts[r][c])
                canvas.text(text, x: labelWidth + c * cell + (cell - Canvas.textWidth(text)) / 2, y: top + r * cell + cell / 2 - 3)
            }
        }
        canvas.text(footer, x: 6, y: top + k * cell + 8)
        return try canvas.png()
    }

    /// Two panels: training loss per epoch; validation accuracy and balanced accuracy per epoch.
    public static func curves(_ history: [EpochRecord]) throws -> [UInt8] {
        let panelWidth = 360, panelHeight = 240, margin = 44
        var canvas = Canvas(width: 2 * (panelWidth + margin) + 20, height: panelHeight + 2 * margin + 10)
        let epochs = history.map { Double($0.epoch) }
        func panel(x0: Int, title: String, series: [(String, [Double], (UInt8, UInt8, UInt8))], range: ClosedRange<Double>) {
            let x1 = x0 + panelWidth, y0 = margin + 10, y1 = margin + 10 + panelHeight
            canvas.text(title, x: x0, y: 10)
            canvas.line(x0, y1, x1, y1, color: (0, 0, 0))
            canvas.line(x0, y0, x0, y1, color: (0, 0, 0))
            let span = max(range.upperBound - range.lowerBound, 1e-9)
            for t in 0...4 {
                let v = range.lowerBound + span * Double(t) / 4
                let y = y1 - Int(Double(panelHeight) * Double(t) / 4)
                canvas.line(x0 - 3, y, x0, y, color: (0, 0, 0))
                canvas.text(Format.fixed(v, span < 2 ? 2 : 1), x: x0 - 40, y: y - 3)
            }
            let last = max(epochs.last ?? 1, 2)
            func point(_ e: Double, _ v: Double) -> (Int, Int) {
                (x0 + Int(Double(panelWidth) * (e - 1) / (last - 1)), y1 - Int(Double(panelHeight) * (v - range.lowerBound) / span))
            }
            canvas.text("EPOCH \(Int(last))", x: x1 - 50, y: y1 + 8)
            for (i, (name, values, color)) in series.enumerated() {
                canvas.text(name, x: x1 - Canvas.textWidth(name) - 4, y: 10 + (i + 1) * 10, color: color)
                for j in values.indices.dropFirst() {
                    let a = point(epochs[j - 1], values[j - 1]), b = point(epochs[j], values[j])
                    canvas.line(a.0, a.1, b.0, b.1, color: color, thickness: 2)
                }
                if values.count == 1 { let p = point(epochs[0], values[0]); canvas.fill(x: p.0 - 2, y: p.1 - 2, w: 5, h: 5, color: color) }
            }
        }
        let losses = history.map(\.trainLoss)
        let top = max(losses.max() ?? 1, 1e-6)
        panel(x0: margin, title: "TRAINING LOSS", series: [("TRAIN LOSS", losses, (200, 40, 40))], range: 0...top)
        panel(x0: 2 * margin + panelWidth + 20, title: "VALIDATION",
              series: [("ACCURACY", history.map(\.validationAccuracy), (40, 90, 200)),
                       ("BALANCED ACCURACY", history.map(\.validationBalancedAccuracy), (30, 150, 60))],
              range: 0...1)
        return try canvas.png()
    }
}

/// Training state on disk, in the `.cgm` container: parameters, running statistics, optimizer
/// moments, the epoch count and the history, written atomically after every epoch.
public enum Checkpoint {
    public struct State {
        public var epochsDone: Int
        public var history: [EpochRecord]
        public var bestScore: Double
        public var bestEpoch: Int
    }

    public static func save(_ path: String, network: TrainingNetwork, optimizer: Optimizer, configuration: TrainingConfiguration,
                            classes: [String], epochsDone: Int, history: [EpochRecord], bestScore: Double, bestEpoch: Int) throws {
        let meta: JSON = [
            "format": "covergenre-checkpoint",
            "configuration": configuration.json,
            "classes": JSON(classes),
            "epochs_done": JSON(epochsDone),
            "optimizer_step": JSON(optimizer.step),
            "best_score": .number(bestScore),
            "best_epoch": JSON(bestEpoch),
            "history": .array(history.map { JSON($0.row) }),
        ]
        var writer = ModelWriter(metadata: meta)
        for p in network.orderedParameters { try writer.add(p.name, shape: p.shape, values: p.value.buffer.map { $0 }) }
        for (name, values) in optimizer.stateTensors().sorted(by: { $0.key < $1.key }) {
            try writer.add(name, shape: [values.count], values: values)
        }
        try writer.write(to: path)
    }

    public static func load(_ path: String, into network: TrainingNetwork, optimizer: Optimizer, configuration: TrainingConfiguration,
                            classes: [String]) throws -> State {
        let file = try ModelFile(path: path)
        let f = FieldReader(file.metadata, context: "checkpoint \(path)")
        guard try f.string("format") == "covergenre-checkpoint" else { throw f.fail("not a training checkpoint") }
        let saved = try f.value("configuration")
        for key in ["architecture", "seed", "batch_size", "width_divisor", "batch_norm", "input_size", "optimizer"]
            where saved[key] != configuration.json[key] {
            throw CoverGenreError(.invalidArgument, "checkpoint \(path) was made with a different \(key) (\(saved[key]?.serialized ?? "none")); start a new run or use the same options")
        }
        guard try f.strings("classes") == classes else { throw CoverGenreError(.invalidArgument, "checkpoint \(path) has different genres") }
        let store = try TensorStore(file: file)
        try network.load(store)
        var optimizerState: [String: [Float]] = [:]
        for name in store.names where name.hasPrefix("optimizer.") { optimizerState[name] = store[name]!.values }
        try optimizer.restore(step: try f.int("optimizer_step"), tensors: optimizerState, parameters: network.orderedParameters)
        let history = try f.array("history").map { row -> EpochRecord in
            guard let fields = row.array?.compactMap(\.string), let record = EpochRecord(row: fields) else { throw f.fail("bad history row") }
            return record
        }
        return State(epochsDone: try f.int("epochs_done"), history: history, bestScore: try f.double("best_score"),
                     bestEpoch: try f.int("best_epoch", range: -1...Int(Int32.max)))
    }
}
