import SystemIO

/// A value produced by the restricted unpickler.
public indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    case float(Double)
    /// An integer too wide for Int64, as little-endian two's-complement bytes.
    case bigInt([UInt8])
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    /// A class or function named by GLOBAL; only allow-listed names ever get here.
    case global(module: String, name: String)
    /// What the container's persistent-id resolver returned (PyTorch: a tensor storage).
    case storage(StorageReference)
    case tensor(TensorReference)
    /// Internal: the MARK opcode's stack marker.
    case mark

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var int: Int64? { if case .int(let i) = self { return i } else { return nil } }
    public var tupleItems: [PickleValue]? {
        switch self {
        case .tuple(let items): return items
        case .list(let list): return list.items
        default: return nil
        }
    }
}

public final class PickleList {
    public var items: [PickleValue] = []
    /// Levels of nesting inside it, itself included (see `RestrictedUnpickler.Limits.maxNesting`).
    var depth = 1
    /// Placed inside another value: from then on it may not change (its depth is final).
    var nested = false
}

/// Dictionaries keep insertion order (PyTorch state dicts are OrderedDicts).
public final class PickleDict {
    public var keys: [PickleValue] = []
    public var values: [PickleValue] = []
    var depth = 1
    var nested = false
}

/// Every list and dict one load makes. A hostile pickle can put a container inside itself (a
/// memoized list appended to itself, 14 bytes); reference counting never frees such a cycle, so
/// a load refuses a result that holds one, and empties every container it made but does not
/// return, whether the load succeeds or fails: nothing it made outlives it unless returned.
final class PickleContainers {
    private var lists: [PickleList] = []
    private var dicts: [PickleDict] = []

    func list() -> PickleList {
        let l = PickleList()
        lists.append(l)
        return l
    }

    func dict() -> PickleDict {
        let d = PickleDict()
        dicts.append(d)
        return d
    }

    /// Empties every container made (breaking any cycle among them).
    func breakAll() {
        for l in lists { l.items = [] }
        for d in dicts { d.keys = []; d.values = [] }
        lists = []
        dicts = []
    }

    /// Checks that `root` reaches no cycle and empties the containers it does not reach. Returns
    /// false, after emptying everything, when it does reach one. Iterative: a hostile pickle can
    /// nest containers deeper than any call stack.
    func settle(keeping root: PickleValue) -> Bool {
        enum Color { case open, closed }
        var color: [ObjectIdentifier: Color] = [:]
        var frames: [(children: [PickleValue], next: Int, owner: ObjectIdentifier?)] = [([root], 0, nil)]
        while !frames.isEmpty {
            let last = frames.count - 1
            guard frames[last].next < frames[last].children.count else {
                if let owner = frames[last].owner { color[owner] = .closed }
                frames.removeLast()
                continue
            }
            let value = frames[last].children[frames[last].next]
            frames[last].next += 1
            var id: ObjectIdentifier?, children: [PickleValue] = []
            switch value {
            case .tuple(let items): children = items
            case .list(let l): id = ObjectIdentifier(l); children = l.items
            case .dict(let d): id = ObjectIdentifier(d); children = d.keys + d.values
            default: continue
            }
            if let id {
                switch color[id] {
                case .open?:
                    breakAll()
                    return false
                case .closed?: continue
                case nil: color[id] = .open
                }
            }
            frames.append((children, 0, id))
        }
        for l in lists where color[ObjectIdentifier(l)] == nil { l.items = [] }
        for d in dicts where color[ObjectIdentifier(d)] == nil { d.keys = []; d.values = [] }
        lists = []
        dicts = []
        return true
    }
}

/// Where a tensor's bytes live in the checkpoint.
public struct StorageReference: Equatable, Sendable {
    public let key: String
    public let dtype: TorchDType
    /// Elements of the stored (root) storage.
    public let elementCount: Int
    /// Legacy checkpoints may reference a view of a root storage: elements
    /// [viewOffset, viewOffset + viewElements) of it.
    public var viewOffset = 0
    public var viewElements: Int

    public init(key: String, dtype: TorchDType, elementCount: Int, viewOffset: Int = 0, viewElements: Int? = nil) {
        self.key = key
        self.dtype = dtype
        self.elementCount = elementCount
        self.viewOffset = viewOffset
        self.viewElements = viewElements ?? elementCount
    }

    /// The same root storage (views of it may differ).
    func sameRoot(_ other: StorageReference) -> Bool {
        key == other.key && dtype == other.dtype && elementCount == other.elementCount
    }
}

public struct TensorReference: Sendable {
    public let storage: StorageReference
    public let offset: Int
    public let shape: [Int]
    public let stride: [Int]
}

public enum TorchDType: String, Sendable, CaseIterable {
    case float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool

    public var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    init?(storageClass: String) {
        guard let dtype = RestrictedUnpickler.storageClasses[storageClass] else { return nil }
        self = dtype
    }
}

/// A pickle reader for PyTorch checkpoints that executes nothing.
///
/// `pickle.load` on an untrusted file runs arbitrary code: GLOBAL + REDUCE call any importable
/// function. This VM implements only the opcodes `torch.save` emits, resolves GLOBAL against an
/// allow-list of the few names a state dict needs (OrderedDict, the tensor rebuild functions,
/// storage classes), and interprets those itself. Everything else is an error naming the opcode
/// or the global. Stack, memo and string sizes are bounded.
public struct RestrictedUnpickler {
    public struct Limits: Sendable {
        public var maxStack = 1 << 20
        public var maxMemo = 1 << 20
        public var maxStringBytes = 1 << 24
        /// Values nested deeper are refused. Releasing a nested value recurses once per level, so
        /// a 40 KB pickle of 37,000 nested tuples overflowed the stack (found by the torch fuzz
        /// target); PyTorch checkpoints nest a few levels.
        public var maxNesting = 256
        public init() {}
    }

    let bytes: UnsafeRawBufferPointer
    var position: Int
    let limits: Limits
    let resolvePersistentID: (PickleValue) throws -> PickleValue

    public init(bytes: UnsafeRawBufferPointer, position: Int = 0, limits: Limits = Limits(),
                resolvePersistentID: @escaping (PickleValue) throws -> PickleValue = { _ in
                    throw CoverGenreError(.modelFormat, "pickle: persistent ids are not allowed here")
                }) {
        self.bytes = bytes
        self.position = position
        self.limits = limits
        self.resolvePersistentID = resolvePersistentID
    }

    /// PyTorch's legacy storage classes, as they appear in checkpoints.
    static let storageClasses: [String: TorchDType] = [
        "FloatStorage": .float32, "HalfStorage": .float16, "BFloat16Storage": .bfloat16, "DoubleStorage": .float64,
        "LongStorage": .int64, "IntStorage": .int32, "ShortStorage": .int16, "CharStorage": .int8, "ByteStorage": .uint8,
        "BoolStorage": .bool,
    ]

    /// Globals a state dict may name. Storage classes are values only; the functions are
    /// interpreted by `call`, never looked up or run.
    static let allowedGlobals: Set<String> = Set([
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter",
    ] + storageClasses.keys.map { "torch.\($0)" })

    func failure(_ what: String) -> CoverGenreError {
        CoverGenreError(.modelFormat, "pickle: \(what) at byte \(position)")
    }

    mutating func read(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - position else { throw failure("data ends inside an opcode") }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    mutating func byte() throws -> UInt8 { try read(1)[0] }
    mutating func le<T: FixedWidthInteger>(_: T.Type) throws -> T { T(littleEndian: try read(MemoryLayout<T>.size).loadUnaligned(as: T.self)) }

    mutating func text(_ n: Int) throws -> String {
        guard n <= limits.maxStringBytes else { throw failure("string of \(n) bytes exceeds the limit") }
        guard let s = String(validating: try read(n), as: UTF8.self) else { throw failure("string is not UTF-8") }
        return s
    }

    mutating func line() throws -> String {
        guard let end = (position..<bytes.count).first(where: { bytes[$0] == 0x0A }), end - position <= 256 else {
            throw failure("unterminated GLOBAL name")
        }
        let s = try text(end - position)
        position += 1
        return s
    }

    /// Runs one pickle to its STOP opcode and returns the result; `position` is left after STOP.
    public mutating func load() throws -> PickleValue {
        let containers = PickleContainers()
        do {
            let value = try run(containers)
            guard containers.settle(keeping: value) else { throw failure("a container holds itself (a reference cycle)") }
            return value
        } catch {
            containers.breakAll()
            throw error
        }
    }

    private mutating func run(_ containers: PickleContainers) throws -> PickleValue {
        // Each stack and memo entry carries how deeply its value nests (0 for scalars), so every
        // new tuple, list or dict knows its own depth without walking its items: tuples are
        // built from finished items, and a list or dict may not change once it is inside another
        // value (standard pickles fill a container before placing it), so depths never go stale.
        var stack: [PickleValue] = []
        var depths: [Int] = []
        var marks: [Int] = []
        var memo: [Int: (value: PickleValue, depth: Int)] = [:]

        func popWithDepth() throws -> (PickleValue, Int) {
            guard let v = stack.popLast(), let d = depths.popLast() else { throw failure("stack underflow") }
            if case .mark = v { throw failure("unexpected MARK") }
            return (v, d)
        }
        func pop() throws -> PickleValue { try popWithDepth().0 }
        func popToMark() throws -> (items: [PickleValue], depth: Int) {
            guard let m = marks.popLast(), m < stack.count, case .mark = stack[m] else { throw failure("no MARK") }
            let items = Array(stack[(m + 1)...]), depth = depths[(m + 1)...].max() ?? 0
            stack.removeSubrange(m...)
            depths.removeSubrange(m...)
            return (items, depth)
        }
        func push(_ v: PickleValue, depth: Int = 0) throws {
            guard stack.count < limits.maxStack else { throw failure("stack deeper than \(limits.maxStack)") }
            guard depth <= limits.maxNesting else { throw failure("values nested deeper than \(limits.maxNesting) levels") }
            stack.append(v)
            depths.append(depth)
        }
        /// Items about to be placed inside a new value: their containers are final from now on.
        func seal(_ items: [PickleValue]) {
            for item in items {
                switch item {
                case .list(let l): l.nested = true
                case .dict(let d): d.nested = true
                default: break
                }
            }
        }
        func pushTuple(_ items: [PickleValue], itemDepth: Int) throws {
            seal(items)
            try push(.tuple(items), depth: itemDepth + 1)
        }
        func remember(_ index: Int) throws {
            guard index >= 0, memo.count < limits.maxMemo || memo[index] != nil else { throw failure("memo larger than \(limits.maxMemo)") }
            guard let top = stack.last, let d = depths.last else { throw failure("memoizing an empty stack") }
            memo[index] = (top, d)
        }
        func recall(_ index: Int) throws {
            guard let entry = memo[index] else { throw failure("memo entry \(index) does not exist") }
            // A recalled list or dict carries its depth now (it may have been filled since).
            switch entry.value {
            case .list(let l): try push(entry.value, depth: l.depth)
            case .dict(let d): try push(entry.value, depth: d.depth)
            default: try push(entry.value, depth: entry.depth)
            }
        }
        func top() throws -> PickleValue {
            guard let v = stack.last else { throw failure("stack underflow") }
            return v
        }
        /// Raises the depth of the container on top of the stack after items of `itemDepth` went in.
        func deepenTop(_ itemDepth: Int) throws {
            guard let i = depths.indices.last else { throw failure("stack underflow") }
            guard itemDepth + 1 <= limits.maxNesting else { throw failure("values nested deeper than \(limits.maxNesting) levels") }
            depths[i] = max(depths[i], itemDepth + 1)
        }
        func setItems(_ dict: PickleValue, _ pairs: [PickleValue], itemDepth: Int) throws {
            guard case .dict(let d) = dict, pairs.count % 2 == 0 else { throw failure("SETITEMS on a non-dict") }
            guard !d.nested else { throw failure("SETITEMS on a dict already placed inside another value") }
            seal(pairs)
            for i in stride(from: 0, to: pairs.count, by: 2) {
                d.keys.append(pairs[i])
                d.values.append(pairs[i + 1])
            }
            d.depth = max(d.depth, itemDepth + 1)
            try deepenTop(itemDepth)
        }
        func append(_ list: PickleValue, _ items: [PickleValue], itemDepth: Int) throws {
            guard case .list(let l) = list else { throw failure("APPEND on a non-list") }
            guard !l.nested else { throw failure("APPEND to a list already placed inside another value") }
            seal(items)
            l.items += items
            l.depth = max(l.depth, itemDepth + 1)
            try deepenTop(itemDepth)
        }

        while true {
            let opcode = try byte()
            switch opcode {
            case 0x80: _ = try byte()                                      // PROTO
            case 0x95: _ = try le(UInt64.self)                             // FRAME (a length hint)
            case 0x2E: return try pop()                                    // STOP
            case 0x28: marks.append(stack.count); try push(.mark)          // MARK
            case 0x29: try push(.tuple([]))                                // EMPTY_TUPLE
            case 0x5D: try push(.list(containers.list()))                  // EMPTY_LIST
            case 0x7D: try push(.dict(containers.dict()))                  // EMPTY_DICT
            case 0x74: let m = try popToMark(); try pushTuple(m.items, itemDepth: m.depth)                   // TUPLE
            case 0x85: let (a, da) = try popWithDepth(); try pushTuple([a], itemDepth: da)                // TUPLE1
            case 0x86:                                                                                   // TUPLE2
                let (b, db) = try popWithDepth(), (a, da) = try popWithDepth()
                try pushTuple([a, b], itemDepth: max(da, db))
            case 0x87:                                                                                   // TUPLE3
                let (c, dc) = try popWithDepth(), (b, db) = try popWithDepth(), (a, da) = try popWithDepth()
                try pushTuple([a, b, c], itemDepth: max(da, db, dc))
            case 0x6C:                                                                                   // LIST
                let m = try popToMark(), l = containers.list()
                seal(m.items)
                l.items = m.items
                l.depth = m.depth + 1
                try push(.list(l), depth: l.depth)
            case 0x64:                                                                                   // DICT
                let m = try popToMark(), d = containers.dict()
                try push(.dict(d), depth: 1)
                try setItems(.dict(d), m.items, itemDepth: m.depth)
            case 0x73:                                                                                   // SETITEM
                let (v, dv) = try popWithDepth(), (k, dk) = try popWithDepth()
                try setItems(try top(), [k, v], itemDepth: max(dk, dv))
            case 0x75: let m = try popToMark(); try setItems(try top(), m.items, itemDepth: m.depth)     // SETITEMS
            case 0x61: let (v, dv) = try popWithDepth(); try append(try top(), [v], itemDepth: dv)        // APPEND
            case 0x65: let m = try popToMark(); try append(try top(), m.items, itemDepth: m.depth)       // APPENDS
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4A: try push(.int(Int64(try le(Int32.self))))           // BININT
            case 0x4B: try push(.int(Int64(try byte())))                   // BININT1
            case 0x4D: try push(.int(Int64(try le(UInt16.self))))          // BININT2
            case 0x8A:                                                     // LONG1
                let n = Int(try byte())
                try push(n <= 8 ? .int(try long(n)) : .bigInt(Array(try read(n))))
            case 0x8B: try push(.int(try long(Int(try le(UInt32.self)))))  // LONG4
            case 0x47:                                                     // BINFLOAT, big-endian
                try push(.float(Double(bitPattern: UInt64(bigEndian: try read(8).loadUnaligned(as: UInt64.self)))))
            case 0x58: try push(.string(try text(Int(try le(UInt32.self)))))        // BINUNICODE
            case 0x8C: try push(.string(try text(Int(try byte()))))                 // SHORT_BINUNICODE
            case 0x8D: try push(.string(try text(try count(try le(UInt64.self)))))  // BINUNICODE8
            case 0x54: try push(.string(try text(Int(try le(UInt32.self)))))        // BINSTRING
            case 0x55: try push(.string(try text(Int(try byte()))))                 // SHORT_BINSTRING
            case 0x42: try push(.bytes(Array(try read(try count(UInt64(try le(UInt32.self)))))))  // BINBYTES
            case 0x43: try push(.bytes(Array(try read(Int(try byte())))))          // SHORT_BINBYTES
            case 0x63: try push(try global(try line(), try line()))                // GLOBAL
            case 0x93:                                                              // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard let n = name.string, let m = module.string else { throw failure("STACK_GLOBAL needs two strings") }
                try push(try global(m, n))
            case 0x71: try remember(Int(try byte()))                                // BINPUT
            case 0x72: try remember(Int(try le(UInt32.self)))                       // LONG_BINPUT
            case 0x94: try remember(memo.count)                                     // MEMOIZE
            case 0x68: try recall(Int(try byte()))                                  // BINGET
            case 0x6A: try recall(Int(try le(UInt32.self)))                         // LONG_BINGET
            case 0x52, 0x81:                                                        // REDUCE, NEWOBJ
                let (args, argsDepth) = try popWithDepth(), callee = try pop()
                seal([args])
                // The result may hold the arguments' values: it nests at most one level deeper.
                let result = try call(callee, args, containers)
                switch result {
                case .list(let l): l.depth = max(l.depth, argsDepth + 1); try push(result, depth: l.depth)
                case .dict(let d): d.depth = max(d.depth, argsDepth + 1); try push(result, depth: d.depth)
                default: try push(result, depth: argsDepth + 1)
                }
            case 0x62: _ = try pop()                                                // BUILD: state is not needed
            case 0x51:                                                              // BINPERSID
                let (id, depth) = try popWithDepth()
                seal([id])
                try push(try resolvePersistentID(id), depth: depth + 1)
            case 0x30: _ = try pop()                                                // POP
            case 0x31: _ = try popToMark()                                          // POP_MARK
            case 0x32: guard let top = stack.last, let d = depths.last else { throw failure("DUP on empty stack") }; try push(top, depth: d)
            default:
                position -= 1
                throw failure("opcode 0x\(String(opcode, radix: 16)) is not allowed in a checkpoint")
            }
        }
    }

    func count(_ n: UInt64) throws -> Int {
        guard n <= UInt64(limits.maxStringBytes) else { throw failure("length \(n) exceeds the limit") }
        return Int(n)
    }

    mutating func long(_ n: Int) throws -> Int64 {
        guard n <= 8 else { throw failure("integer of \(n) bytes is too large") }
        let raw = try read(n)
        var value: Int64 = 0
        for i in 0..<n { value |= Int64(raw[i]) << (8 * Int64(i)) }
        if n > 0 && n < 8 && raw[n - 1] & 0x80 != 0 { value -= Int64(1) << (8 * Int64(n)) } // sign-extend
        return value
    }

    func global(_ module: String, _ name: String) throws -> PickleValue {
        guard Self.allowedGlobals.contains("\(module).\(name)") else {
            throw failure("refusing global \(module).\(name): a state dict never needs it (hostile or not a state dict)")
        }
        return .global(module: module, name: name)
    }

    /// The few callables a state dict uses, interpreted here.
    func call(_ callee: PickleValue, _ args: PickleValue, _ containers: PickleContainers) throws -> PickleValue {
        guard case .global(let module, let name) = callee, let a = args.tupleItems else {
            throw failure("REDUCE of something that is not an allowed global")
        }
        switch "\(module).\(name)" {
        case "collections.OrderedDict":
            return .dict(containers.dict())
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
            guard a.count >= 4, case .storage(let storage) = a[0], let offset = a[1].int,
                  let size = a[2].tupleItems?.compactMap({ $0.int }), let stride = a[3].tupleItems?.compactMap({ $0.int }),
                  size.count == a[2].tupleItems?.count, stride.count == size.count, size.count <= 8,
                  offset >= 0, size.allSatisfy({ $0 >= 0 && $0 <= Int64(Int32.max) }),
                  stride.allSatisfy({ $0 >= 0 && $0 <= Int64(Int32.max) }) else {
                throw failure("malformed tensor (storage, offset, size, stride)")
            }
            return .tensor(TensorReference(storage: storage, offset: Int(offset), shape: size.map { Int($0) },
                                           stride: stride.map { Int($0) }))
        case "torch._utils._rebuild_parameter":
            guard let data = a.first else { throw failure("malformed parameter") }
            return data
        default:
            throw failure("\(module).\(name) cannot be called")
        }
    }
}
