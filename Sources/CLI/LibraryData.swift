import MusicLibrary
import SystemIO
import Training

/// A training set from a music library's tagged albums (`covergenre train --library`): one cover
/// per album, labelled by the first of its genre tags that means a genre of the chosen set, split
/// by album artist so that no artist's covers are on both sides of a held-out score.
struct LibraryData {
    let dataset: LabeledDataset
    /// What was left out and why, for the user to read (tags no table knows, genres not chosen).
    let report: [String]

    /// `genres` nil: every broad genre with at least `minAlbums` albums.
    static func build(albums: [Album], names: GenreNames, genres chosen: [String]?, minAlbums: Int, seed: UInt64) throws -> LibraryData {
        var report: [String] = []
        var unmapped: [String: Int] = [:], uncovered = 0, untagged = 0
        // Each album's broad genre: the first tag the table knows.
        var labelled: [(album: Album, genre: String)] = []
        // One cover file in a folder of several albums stands for each of them: it is trained on
        // once, so the same picture cannot be on both sides of the split.
        var covers = Set<String>(), shared = 0
        for album in albums {
            guard !album.genres.isEmpty else { untagged += 1; continue }
            guard let cover = album.cover else { uncovered += 1; continue }
            guard covers.insert(cover.path).inserted else { shared += 1; continue }
            if let genre = album.genres.lazy.compactMap({ names.genre($0) }).first {
                labelled.append((album, genre))
            } else {
                for tag in album.genres { unmapped[tag, default: 0] += 1 }
            }
        }
        var counts: [String: Int] = [:]
        for l in labelled { counts[l.genre, default: 0] += 1 }
        let classes: [String]
        if let chosen {
            classes = chosen
        } else {
            classes = counts.filter { $0.value >= minAlbums }.map(\.key).sorted()
        }
        guard classes.count >= 2 else {
            throw CoverGenreError(.invalidArgument, "the library's tagged albums give \(classes.count) genre(s) with at least \(minAlbums) albums: "
                + counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "; a model needs two or more")
        }
        // A genre outside the chosen set joins its parent when the set has it (Metal -> Rock).
        var items: [(album: Album, label: Int)] = []
        var leftOut: [String: Int] = [:]
        for (album, genre) in labelled {
            if let label = names.label(genre, labels: classes), let i = classes.firstIndex(of: label) {
                items.append((album, i))
            } else {
                leftOut[genre, default: 0] += 1
            }
        }
        if untagged > 0 { report.append("\(untagged) albums have no genre tag (covergenre scan --missing suggests theirs)") }
        if uncovered > 0 { report.append("\(uncovered) tagged albums have no cover") }
        if shared > 0 { report.append("\(shared) albums share their folder's cover file with another album: used once") }
        if !unmapped.isEmpty {
            report.append("tags no table maps (add them with --genre-map): " + unmapped.sorted { ($1.value, $0.key) < ($0.value, $1.key) }
                .map { "\"\($0.key)\" \($0.value)" }.joined(separator: ", "))
        }
        if !leftOut.isEmpty {
            report.append("genres left out (not in --genres, or fewer than \(minAlbums) albums): "
                + leftOut.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        let splits = splitByArtist(items.map { ($0.album.albumArtist ?? $0.album.folder, $0.label) }, classes: classes.count, seed: seed)
        let dataset = LabeledDataset(classes: classes, items: zip(items, splits).map { item, split in
            LabeledImage(path: item.album.cover!.path, label: item.label, split: split, source: "library")
        })
        return LibraryData(dataset: dataset, report: report)
    }

    /// Train, val and test (70/15/15 of each genre's albums, as near as whole artists allow): an
    /// artist's albums all go to one split. Artists are taken in a seeded order, largest first,
    /// each to the split furthest below its share of the artist's main genre.
    static func splitByArtist(_ albums: [(artist: String, label: Int)], classes: Int, seed: UInt64) -> [Split] {
        var byArtist: [String: [Int]] = [:]
        for (i, a) in albums.enumerated() { byArtist[a.artist.lowercased(), default: []].append(i) }
        func hash(_ s: String) -> UInt64 {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
            for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            return h
        }
        let artists = byArtist.keys.sorted { (byArtist[$0]!.count, hash($0)) > (byArtist[$1]!.count, hash($1)) }
        var perClass = [Int](repeating: 0, count: classes)
        for a in albums { perClass[a.label] += 1 }
        let shares: [(Split, Double)] = [(.train, 0.7), (.val, 0.15), (.test, 0.15)]
        var assigned = [[Int]](repeating: [Int](repeating: 0, count: classes), count: 3)
        var result = [Split](repeating: .train, count: albums.count)
        for artist in artists {
            let members = byArtist[artist]!
            var labelCounts = [Int](repeating: 0, count: classes)
            for i in members { labelCounts[albums[i].label] += 1 }
            let main = labelCounts.indices.max { labelCounts[$0] < labelCounts[$1] }!
            // The split whose count for the main genre is furthest below its target.
            let pick = shares.indices.max { a, b in
                let da = shares[a].1 * Double(perClass[main]) - Double(assigned[a][main])
                let db = shares[b].1 * Double(perClass[main]) - Double(assigned[b][main])
                return da < db
            }!
            for i in members {
                result[i] = shares[pick].0
                assigned[pick][albums[i].label] += 1
            }
        }
        return result
    }
}
