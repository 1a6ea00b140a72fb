import CCoverGenreAPI

/// CoverGenre's one version number, read from include/covergenre.h's CG_API_VERSION_* macros: the
/// library (`cg_version_string`), the C API, the command-line tools, pkg-config and the Python
/// package all report it. It follows the C API's semantic versioning (the SONAME's number is its
/// major), because the C ABI is the strictest promise the project makes.
public enum CoverGenreVersion {
    public static let major = Int(CG_API_VERSION_MAJOR)
    public static let minor = Int(CG_API_VERSION_MINOR)
    public static let patch = Int(CG_API_VERSION_PATCH)
    /// "MAJOR.MINOR.PATCH".
    public static let string = "\(major).\(minor).\(patch)"
}
