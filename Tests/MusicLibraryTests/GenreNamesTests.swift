import MusicLibrary
import XCTest

/// Tags as people write them, to a model's genres.
final class GenreNamesTests: XCTestCase {
    let labels = ["Country", "Electronic", "HipHop", "Pop", "Rock"]

    func testCommonSpellingsMeanOneGenre() {
        let names = GenreNames()
        for tag in ["Hip Hop", "Hip-Hop", "hiphop", "HIP HOP", "Rap", "Hip-Hop/Rap", "Gangsta Rap"] {
            XCTAssertEqual(names.label(tag, labels: labels), "HipHop", tag)
        }
        for tag in ["Electronic", "electronica", "Techno", "Drum & Bass", "IDM"] {
            XCTAssertEqual(names.label(tag, labels: labels), "Electronic", tag)
        }
        XCTAssertEqual(names.label("Alternative Rock", labels: labels), "Rock")
        XCTAssertEqual(names.label("country", labels: labels), "Country")
    }

    func testMetalIsItsOwnGenreOrFiledUnderRock() {
        let names = GenreNames()
        XCTAssertEqual(names.genre("Heavy Metal"), "Metal")
        XCTAssertEqual(names.label("metal", labels: labels), "Rock")
        XCTAssertEqual(names.label("Death Metal", labels: labels + ["Metal"]), "Metal")
    }

    func testUnknownTagsAreUnmappedNotGuessed() {
        let names = GenreNames()
        XCTAssertNil(names.label("Polka", labels: labels))
        XCTAssertNil(names.label("Jazz", labels: labels), "the model has no Jazz and no parent for it")
        XCTAssertNil(names.label("", labels: labels))
    }

    func testSeveralGenresInOneValueUseTheFirstKnown() {
        XCTAssertEqual(GenreNames().label("Polka; Hip-Hop; Pop", labels: labels), "HipHop")
    }

    func testTheUsersTableComesFirst() {
        let names = GenreNames(overrides: ["Polka": "Pop", "Rap": ""])
        XCTAssertEqual(names.label("polka", labels: labels), "Pop")
        XCTAssertNil(names.label("Rap", labels: labels), "mapped to nothing by the user")
        XCTAssertEqual(names.label("Hip Hop", labels: labels), "HipHop")
    }

    func testCoverFilesByTheNamesPeopleUse() {
        XCTAssertEqual(MusicLibrary.coverFile(among: ["/a/Folder.JPG", "/a/cover.png", "/a/back.jpg"]), "/a/cover.png")
        XCTAssertEqual(MusicLibrary.coverFile(among: ["/a/AlbumArt_{X}_Large.jpg", "/a/scan.jpg"]), "/a/AlbumArt_{X}_Large.jpg")
        XCTAssertEqual(MusicLibrary.coverFile(among: ["/a/front.webp", "/a/folder.jpg"]), "/a/folder.jpg")
        XCTAssertNil(MusicLibrary.coverFile(among: ["/a/back.jpg", "/a/booklet.png"]))
    }
}
