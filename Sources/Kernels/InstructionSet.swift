import CKernels

/// Which instruction-set variant of the kernels runs in this process (see `cgk_isa` in
/// cg_kernels.h): the best the CPU executes, or the one the environment variable
/// `COVERGENRE_ISA` names. Decided on first use and fixed for the process's life.
public enum InstructionSet: Int, CaseIterable, Sendable, CustomStringConvertible {
    case generic = 0, avx2 = 1, avx512 = 2

    /// The variant the kernels run.
    public static var current: InstructionSet { InstructionSet(rawValue: Int(cgk_isa())) ?? .generic }
    /// The best variant this CPU executes.
    public static var best: InstructionSet { InstructionSet(rawValue: Int(cgk_isa_best())) ?? .generic }
    /// The variant `COVERGENRE_ISA` asks for, or nil when it is unset or names none.
    public static var requested: InstructionSet? { InstructionSet(rawValue: Int(cgk_isa_requested())) }

    /// "generic", "avx2" or "avx512", as `COVERGENRE_ISA` spells it.
    public var description: String { String(cString: cgk_isa_name(Int32(rawValue))) }
}
