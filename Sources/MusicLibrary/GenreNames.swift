/// Genre tags as people write them, mapped to a model's genres. Tags differ in spelling ("Hip
/// Hop", "Hip-Hop", "hiphop"), in language of the tagger ("Rap") and in depth ("Alternative
/// Rock", "Death Metal"); a model knows a handful of genres. The built-in table maps common tags
/// to broad genres; a user's own table (CSV `tag,genre`) comes first and may map a tag to nothing.
public struct GenreNames: Sendable {
    /// tag key (lower case, letters and digits only) -> genre; "" = deliberately unmapped.
    let table: [String: String]

    /// The built-in table, with `overrides` (tag -> genre, "" to leave a tag out) on top.
    public init(overrides: [String: String] = [:]) {
        var t = GenreNames.builtIn
        for (tag, genre) in overrides { t[GenreNames.key(tag)] = genre }
        table = t
    }

    /// Broad genres and the tags that mean them.
    static let families: [(String, [String])] = [
        ("HipHop", ["hiphop", "hiphoprap", "rap", "raphiphop", "gangstarap", "gangsta", "trap", "boombap", "grime", "drill",
                    "conscioushiphop", "undergroundhiphop", "alternativehiphop", "hardcorehiphop", "southernhiphop", "eastcoasthiphop",
                    "westcoasthiphop", "jazzrap", "triphop"]),
        ("Electronic", ["electronic", "electronica", "electro", "techno", "house", "deephouse", "techhouse", "trance", "edm", "dance",
                        "electronicdance", "ambient", "idm", "drumandbass", "drumnbass", "drumbass", "dnb", "jungle", "dubstep", "breakbeat",
                        "downtempo", "chillout", "synthwave", "electroclash", "industrial", "garage", "ukgarage", "hardstyle",
                        "experimentalelectronic", "minimal", "acidhouse", "eurodance"]),
        ("Rock", ["rock", "alternative", "alternativerock", "altrock", "indierock", "indie", "punk", "punkrock", "poppunk", "hardrock",
                  "classicrock", "grunge", "progressiverock", "progrock", "psychedelicrock", "psychedelic", "garagerock", "postpunk",
                  "shoegaze", "stonerrock", "rocknroll", "rockandroll", "southernrock", "bluesrock", "postrock", "emo", "newwave",
                  "mathrock", "noiserock", "artrock", "glamrock", "krautrock", "surfrock", "rockabilly"]),
        ("Metal", ["metal", "heavymetal", "deathmetal", "blackmetal", "thrashmetal", "doommetal", "numetal", "powermetal", "metalcore",
                   "progressivemetal", "sludgemetal", "speedmetal", "grindcore", "deathcore", "alternativemetal", "symphonicmetal",
                   "gothicmetal", "folkmetal", "industrialmetal"]),
        ("Pop", ["pop", "dancepop", "electropop", "indiepop", "kpop", "jpop", "synthpop", "teenpop", "popmusic", "chamberpop",
                 "dreampop", "artpop", "powerpop", "europop", "latinpop", "adultcontemporary", "bubblegum", "cpop"]),
        ("Country", ["country", "americana", "bluegrass", "altcountry", "alternativecountry", "countryrock", "outlawcountry",
                     "contemporarycountry", "countrypop", "honkytonk", "western", "countryandwestern"]),
        ("Jazz", ["jazz", "smoothjazz", "bebop", "jazzfusion", "fusion", "freejazz", "swing", "bigband", "vocaljazz", "cooljazz",
                  "hardbop", "acidjazz", "latinjazz", "modaljazz", "contemporaryjazz"]),
        ("Classical", ["classical", "orchestral", "baroque", "opera", "romantic", "chamber", "chambermusic", "symphony", "classicalmusic",
                       "contemporaryclassical", "modernclassical", "earlymusic", "choral", "renaissance", "minimalism", "soundtrack"]),
        ("Reggae", ["reggae", "dub", "ska", "dancehall", "rootsreggae", "rocksteady", "reggaeton", "lovers rock"]),
        ("Blues", ["blues", "deltablues", "chicagoblues", "electricblues"]),
        ("Folk", ["folk", "folkrock", "indiefolk", "singersongwriter", "contemporaryfolk", "traditionalfolk", "acoustic"]),
        ("RnB", ["rnb", "rb", "randb", "rhythmandblues", "contemporaryrnb", "neosoul", "soul", "funk", "motown", "disco"]),
        ("Latin", ["latin", "salsa", "bossanova", "samba", "cumbia", "tango", "bachata", "merengue"]),
    ]

    /// Where a model lacks a broad genre, the one it is usually filed under (Discogs files Metal
    /// under Rock; models/taxonomy.csv's default label set does the same).
    static let parents: [String: String] = ["Metal": "Rock"]

    static let builtIn: [String: String] = {
        var t: [String: String] = [:]
        for (genre, tags) in families { for tag in tags { t[key(tag)] = genre } }
        return t
    }()

    /// A tag's comparison key: lower case, letters and digits only ("Hip-Hop" and "hip hop" agree;
    /// "R&B" becomes "rb", so both spellings are listed).
    public static func key(_ tag: String) -> String {
        String(tag.lowercased().unicodeScalars.filter { $0.properties.isAlphabetic || ("0"..."9").contains($0) }.map(Character.init))
    }

    /// The broad genre a tag means, or nil when the table does not know it (or maps it to nothing).
    public func genre(_ tag: String) -> String? {
        let k = GenreNames.key(tag)
        if let g = table[k] { return g.isEmpty ? nil : g }
        // "Rock; Pop", "Rock / Pop": several genres in one value; the first known one counts.
        for separator in [";", "/", ",", "|"] where tag.contains(separator) {
            for part in tag.split(separator: Character(separator)) {
                if let g = genre(String(part)) { return g }
            }
        }
        return nil
    }

    /// The model label a tag means: the tag itself when it names a label, else its broad genre
    /// (or that genre's parent) when the model has it; nil when the model has no such genre.
    public func label(_ tag: String, labels: [String]) -> String? {
        let byKey = Dictionary(labels.map { (GenreNames.key($0), $0) }, uniquingKeysWith: { a, _ in a })
        if let exact = byKey[GenreNames.key(tag)], table[GenreNames.key(tag)].map({ !$0.isEmpty }) ?? true { return exact }
        guard let broad = genre(tag) else { return nil }
        if let l = byKey[GenreNames.key(broad)] { return l }
        if let parent = GenreNames.parents[broad], let l = byKey[GenreNames.key(parent)] { return l }
        return nil
    }
}
