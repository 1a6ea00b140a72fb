import Architectures
import ArgumentParser
import CoverGenre
import ModelFormat
import Training

// The library's choices as argument types: swift-argument-parser checks them while parsing, lists
// them in --help, and a wrong one stops the command before any work starts.

extension ArchitectureName: ExpressibleByArgument {}
extension Optimizer.Kind: ExpressibleByArgument {}
extension TrainingConfiguration.Schedule: ExpressibleByArgument {}
extension TrainingConfiguration.Balance: ExpressibleByArgument {}
extension FeatureKind: ExpressibleByArgument {}
extension ModelOptions.MirrorChoice: ExpressibleByArgument {}

/// --storage: how tensors are stored in the written model.
enum StorageChoice: String, ExpressibleByArgument, CaseIterable {
    case f32, f16
    var dtype: DType { self == .f32 ? .float32 : .float16 }
}

/// --resize for a backbone: the whole cover squeezed, or its centre cropped.
enum ResizeChoice: String, ExpressibleByArgument, CaseIterable {
    case stretch
    case centerCrop = "center-crop"
}
