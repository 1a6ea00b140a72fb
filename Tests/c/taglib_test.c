// Tests of the TagLib shim (Sources/CTagLib) against the files Tests/audio/make_audio.py writes.
// Usage: taglib_test FIXTURE_DIR   (the directory is modified: write tests tag copies in it)
// Last line: "N passed, N failed"; exit status 1 when anything failed.
#define _GNU_SOURCE
#include "cg_taglib.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int passed, failed;
static const char *dir;

#define CHECK(condition, ...)                                                                                          \
    do {                                                                                                               \
        if (condition) {                                                                                               \
            passed++;                                                                                                  \
        } else {                                                                                                       \
            failed++;                                                                                                  \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

// Not thread-safe (the reader threads build their own paths).
static char *path_of(const char *name) {
    static char buffers[8][4096];
    static int next;
    char *buffer = buffers[next++ % 8];
    snprintf(buffer, sizeof buffers[0], "%s/%s", dir, name);
    return buffer;
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    unsigned char *data = malloc(length > 0 ? (size_t)length : 1);
    *size = fread(data, 1, (size_t)length, file);
    fclose(file);
    return data;
}

static int copy_file(const char *from, const char *to) {
    size_t size;
    unsigned char *data = slurp(from, &size);
    if (data == NULL) return -1;
    FILE *file = fopen(to, "wb");
    if (file == NULL) {
        free(data);
        return -1;
    }
    size_t written = fwrite(data, 1, size, file);
    fclose(file);
    free(data);
    return written == size ? 0 : -1;
}

static int same_bytes(const char *path, const unsigned char *data, size_t size) {
    size_t length;
    unsigned char *current = slurp(path, &length);
    int same = current != NULL && length == size && memcmp(current, data, size) == 0;
    free(current);
    return same;
}

// MD5 of the audio packets, as ffmpeg demuxes them: unchanged by any tag edit.
static void audio_md5(const char *path, char *out, size_t capacity) {
    char command[8192];
    snprintf(command, sizeof command, "ffmpeg -nostdin -v error -i '%s' -map 0:a -c copy -f md5 - 2>&1", path);
    out[0] = '\0';
    FILE *pipe = popen(command, "r");
    if (pipe == NULL) return;
    if (fgets(out, (int)capacity, pipe) == NULL) out[0] = '\0';
    pclose(pipe);
    out[strcspn(out, "\n")] = '\0';
}

// Temporary files the writer may have left in a directory.
static int leftovers(const char *directory) {
    DIR *d = opendir(directory);
    if (d == NULL) return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL)
        if (strstr(entry->d_name, ".cgtmp-") != NULL) count++;
    closedir(d);
    return count;
}

static const char *genre_list(const cgt_tags *tags) {
    static char text[512];
    text[0] = '\0';
    for (size_t i = 0; i < tags->genre_count; i++) {
        if (i) strncat(text, "|", sizeof text - strlen(text) - 1);
        strncat(text, tags->genres[i], sizeof text - strlen(text) - 1);
    }
    return text;
}

static const char *orempty(const char *text) { return text ? text : "(null)"; }

// ---------------------------------------------------------------------------------------------

static unsigned char *front, *back;
static size_t front_size, back_size;

static void expect_cover(const char *name, const unsigned char *bytes, size_t size, uint32_t type, uint32_t count,
                         const char *mime) {
    cgt_picture picture;
    cgt_status status = cgt_read_cover(path_of(name), 16u << 20, &picture);
    CHECK(status == CGT_OK, "%s: read_cover: %s (%s)", name, cgt_status_string(status), picture.message);
    if (status == CGT_OK) {
        CHECK(picture.size == size && memcmp(picture.data, bytes, size) == 0, "%s: cover bytes differ (%zu vs %zu)", name,
              picture.size, size);
        CHECK(picture.picture_type == type, "%s: picture type %u, expected %u", name, picture.picture_type, type);
        CHECK(picture.picture_count == count, "%s: %u pictures, expected %u", name, picture.picture_count, count);
        CHECK(strcmp(picture.mime, mime) == 0, "%s: mime '%s', expected '%s'", name, picture.mime, mime);
    }
    cgt_picture_free(&picture);
}

static void expect_cover_status(const char *name, const char *path, cgt_status expected, const char *in_message) {
    cgt_picture picture;
    cgt_status status = cgt_read_cover(path, 16u << 20, &picture);
    CHECK(status == expected, "%s: read_cover %s, expected %s (%s)", name, cgt_status_string(status),
          cgt_status_string(expected), picture.message);
    CHECK(picture.data == NULL, "%s: data set on failure", name);
    if (in_message != NULL)
        CHECK(strstr(picture.message, in_message) != NULL, "%s: message '%s' lacks '%s'", name, picture.message, in_message);
    cgt_picture_free(&picture);
}

static void expect_tags_status(const char *name, cgt_status expected) {
    cgt_tags tags;
    cgt_status status = cgt_read_tags(path_of(name), &tags);
    CHECK(status == expected, "%s: read_tags %s, expected %s (%s)", name, cgt_status_string(status),
          cgt_status_string(expected), tags.message);
    cgt_tags_free(&tags);
}

static void test_covers(void) {
    static const char *formats[] = {"mp3", "flac", "m4a", "ogg", "opus", "wav", "aiff"};
    char name[64];
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        snprintf(name, sizeof name, "cover.%s", formats[i]);
        expect_cover(name, front, front_size, 3, 1, "image/jpeg");
    }
    static const char *two[] = {"mp3", "flac", "ogg"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "two_pictures.%s", two[i]);
        expect_cover(name, front, front_size, 3, 2, "image/jpeg");
    }
    static const char *none[] = {"mp3", "flac", "m4a"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "no_picture.%s", none[i]);
        expect_cover_status(name, path_of(name), CGT_ERR_NO_COVER, "no embedded picture");
    }

    size_t size;
    unsigned char *corrupt = slurp(path_of("corrupt_picture.bin"), &size);
    expect_cover("corrupt_picture.mp3", corrupt, size, 3, 1, "image/jpeg");
    free(corrupt);

    unsigned char *bomb = slurp(path_of("bomb.png"), &size);
    expect_cover("bomb_picture.flac", bomb, size, 3, 1, "image/png");
    free(bomb);
    cgt_picture picture;
    cgt_status status = cgt_read_cover(path_of("bomb_picture.flac"), 1000, &picture);
    CHECK(status == CGT_ERR_TOO_LARGE && picture.data == NULL && picture.picture_count == 1,
          "bomb_picture.flac with max 1000: %s, count %u (%s)", cgt_status_string(status), picture.picture_count,
          picture.message);
    cgt_picture_free(&picture);
    // Exactly at the limit is allowed.
    status = cgt_read_cover(path_of("cover.mp3"), front_size, &picture);
    CHECK(status == CGT_OK, "cover.mp3 with max = its size: %s", cgt_status_string(status));
    cgt_picture_free(&picture);
    status = cgt_read_cover(path_of("cover.mp3"), front_size - 1, &picture);
    CHECK(status == CGT_ERR_TOO_LARGE, "cover.mp3 with max = size - 1: %s", cgt_status_string(status));
    cgt_picture_free(&picture);
}

static void test_hostile(void) {
    expect_cover_status("truncated.flac", path_of("truncated.flac"), CGT_ERR_CORRUPT, "truncated.flac");
    expect_tags_status("truncated.flac", CGT_ERR_CORRUPT);

    // A frame header claiming 100 MB: TagLib stops at it; the frame before it is still read.
    expect_cover_status("apic_100mb.mp3", path_of("apic_100mb.mp3"), CGT_ERR_NO_COVER, NULL);
    expect_cover_status("id3_100mb_truncated.mp3", path_of("id3_100mb_truncated.mp3"), CGT_ERR_NO_COVER, NULL);
    static const char *big[] = {"apic_100mb.mp3", "id3_100mb_truncated.mp3"};
    for (int i = 0; i < 2; i++) {
        cgt_tags tags;
        cgt_status status = cgt_read_tags(path_of(big[i]), &tags);
        CHECK(status == CGT_OK && tags.title && strcmp(tags.title, "Big Picture") == 0, "%s: tags %s, title %s (%s)",
              big[i], cgt_status_string(status), orempty(tags.title), tags.message);
        cgt_tags_free(&tags);
    }

    // Files built to make TagLib 1.13 recurse or allocate without bound.
    static const char *refused[] = {"zlib_bomb.mp3", "nested_chapters.mp3", "frame_flood.mp3", "nested_atoms.m4a",
                                    "chunk_flood.wav", "block_flood.flac", "comment_flood.flac"};
    static const char *why[] = {"inflate", "nested", "ID3v2 text values", "nested", "RIFF chunks", "FLAC metadata blocks",
                                "Vorbis comment fields"};
    for (int i = 0; i < 7; i++) {
        expect_cover_status(refused[i], path_of(refused[i]), CGT_ERR_TOO_LARGE, why[i]);
        expect_tags_status(refused[i], CGT_ERR_TOO_LARGE);
    }

    expect_cover_status("not_audio.mp3", path_of("not_audio.mp3"), CGT_ERR_UNSUPPORTED, "JPEG image");
    expect_cover_status("notes.txt", path_of("notes.txt"), CGT_ERR_UNSUPPORTED, "notes.txt");
    expect_cover_status("bomb.png", path_of("bomb.png"), CGT_ERR_UNSUPPORTED, "PNG image");
    expect_cover_status("directory", dir, CGT_ERR_UNSUPPORTED, "directory");
    expect_cover_status("missing", path_of("missing.mp3"), CGT_ERR_IO, "missing.mp3");
    expect_cover_status("NULL path", NULL, CGT_ERR_INVALID_ARGUMENT, NULL);
    expect_cover_status("empty path", "", CGT_ERR_INVALID_ARGUMENT, NULL);
    expect_cover_status("device", "/dev/zero", CGT_ERR_UNSUPPORTED, "regular file");
    expect_tags_status("notes.txt", CGT_ERR_UNSUPPORTED);
    CHECK(cgt_read_cover(path_of("cover.mp3"), 1, NULL) == CGT_ERR_INVALID_ARGUMENT, "NULL picture accepted");
    CHECK(cgt_read_tags(path_of("cover.mp3"), NULL) == CGT_ERR_INVALID_ARGUMENT, "NULL tags accepted");

    // A long path keeps its tail (the file name) in the message.
    char longpath[3000];
    memset(longpath, 'a', sizeof longpath);
    memcpy(longpath, "/tmp/", 5);
    strcpy(longpath + sizeof longpath - 20, "/the-file-name.mp3");
    cgt_picture picture;
    cgt_read_cover(longpath, 100, &picture);
    CHECK(strstr(picture.message, "the-file-name.mp3") != NULL && strlen(picture.message) < CGT_MESSAGE_SIZE,
          "long path message: '%s'", picture.message);
    cgt_picture_free(&picture);
}

static void expect_tags(const char *name, cgt_audio_format format) {
    cgt_tags tags;
    cgt_status status = cgt_read_tags(path_of(name), &tags);
    CHECK(status == CGT_OK, "%s: read_tags: %s (%s)", name, cgt_status_string(status), tags.message);
    if (status != CGT_OK) return;
    CHECK(tags.album && strcmp(tags.album, "Test Album") == 0, "%s: album %s", name, orempty(tags.album));
    CHECK(tags.album_artist && strcmp(tags.album_artist, "Test Album Artist") == 0, "%s: album artist %s", name,
          orempty(tags.album_artist));
    CHECK(tags.artist && strcmp(tags.artist, "Test Artist") == 0, "%s: artist %s", name, orempty(tags.artist));
    CHECK(tags.title && strcmp(tags.title, "Test Title") == 0, "%s: title %s", name, orempty(tags.title));
    CHECK(tags.track_number == 3 && tags.track_total == 12, "%s: track %u/%u", name, tags.track_number, tags.track_total);
    CHECK(tags.disc_number == 1 && tags.disc_total == 2, "%s: disc %u/%u", name, tags.disc_number, tags.disc_total);
    CHECK(strcmp(genre_list(&tags), "Rock|Shoegaze") == 0, "%s: genres '%s' (%zu)", name, genre_list(&tags), tags.genre_count);
    CHECK(tags.duration_ms >= 900 && tags.duration_ms <= 1200, "%s: duration %lld ms", name, (long long)tags.duration_ms);
    CHECK(tags.format == format, "%s: format %d, expected %d", name, tags.format, format);
    cgt_tags_free(&tags);
}

static void test_tags(void) {
    expect_tags("cover.mp3", CGT_AUDIO_MPEG);
    expect_tags("cover.flac", CGT_AUDIO_FLAC);
    expect_tags("cover.m4a", CGT_AUDIO_MP4);
    expect_tags("cover.ogg", CGT_AUDIO_OGG_VORBIS);
    expect_tags("cover.opus", CGT_AUDIO_OGG_OPUS);
    expect_tags("cover.wav", CGT_AUDIO_WAV);
    expect_tags("cover.aiff", CGT_AUDIO_AIFF);

    cgt_tags tags;
    cgt_status status = cgt_read_tags(path_of("id3v1_genre.mp3"), &tags);
    CHECK(status == CGT_OK && strcmp(genre_list(&tags), "Rock") == 0 && tags.album && strcmp(tags.album, "V1 Album") == 0,
          "id3v1_genre.mp3: %s genres '%s' album %s", cgt_status_string(status), genre_list(&tags), orempty(tags.album));
    CHECK(tags.album_artist == NULL, "id3v1_genre.mp3: album artist %s", orempty(tags.album_artist));
    cgt_tags_free(&tags);
    status = cgt_read_tags(path_of("id3v23_numeric_genre.mp3"), &tags);
    CHECK(status == CGT_OK && strcmp(genre_list(&tags), "Rock") == 0, "id3v23_numeric_genre.mp3: %s genres '%s'",
          cgt_status_string(status), genre_list(&tags));
    cgt_tags_free(&tags);
}

static void test_sniff(void) {
    static const struct {
        const char *name;
        cgt_audio_format format;
    } cases[] = {
        {"cover.mp3", CGT_AUDIO_ID3V2}, {"id3v1_genre.mp3", CGT_AUDIO_MPEG}, {"cover.flac", CGT_AUDIO_FLAC},
        {"cover.ogg", CGT_AUDIO_OGG_VORBIS}, {"cover.opus", CGT_AUDIO_OGG_OPUS}, {"cover.m4a", CGT_AUDIO_MP4},
        {"cover.wav", CGT_AUDIO_WAV}, {"cover.aiff", CGT_AUDIO_AIFF}, {"front.jpg", CGT_AUDIO_NONE},
        {"bomb.png", CGT_AUDIO_NONE}, {"notes.txt", CGT_AUDIO_NONE}, {"corrupt_picture.bin", CGT_AUDIO_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t size;
        unsigned char *data = slurp(path_of(cases[i].name), &size);
        size_t n = size < CGT_SNIFF_BYTES ? size : CGT_SNIFF_BYTES;
        cgt_audio_format format = data ? cgt_sniff_audio(data, n) : CGT_AUDIO_NONE;
        CHECK(format == cases[i].format, "sniff %s: %d, expected %d", cases[i].name, format, cases[i].format);
        // Every prefix length is safe (run under ASan: no read past n).
        for (size_t k = 0; k <= n && data; k++) {
            unsigned char *copy = malloc(k ? k : 1);
            memcpy(copy, data, k);
            (void)cgt_sniff_audio(copy, k);
            free(copy);
        }
        free(data);
    }
    // An ID3v2 tag that fits in the bytes given is looked past.
    unsigned char small[] = {'I', 'D', '3', 4, 0, 0, 0, 0, 0, 0, 'f', 'L', 'a', 'C', 0, 0, 0, 34};
    CHECK(cgt_sniff_audio(small, sizeof small) == CGT_AUDIO_FLAC, "ID3v2 + fLaC not sniffed as FLAC");
    CHECK(cgt_sniff_audio(NULL, 0) == CGT_AUDIO_NONE, "NULL sniffed as audio");
    unsigned char avif[] = {0, 0, 0, 28, 'f', 't', 'y', 'p', 'a', 'v', 'i', 'f'};
    CHECK(cgt_sniff_audio(avif, sizeof avif) == CGT_AUDIO_NONE, "AVIF sniffed as MP4 audio");
}

// ---------------------------------------------------------------------------------------------

static void expect_genres(const char *path, const char *expected, const char *what) {
    cgt_tags tags;
    cgt_status status = cgt_read_tags(path, &tags);
    CHECK(status == CGT_OK && strcmp(genre_list(&tags), expected) == 0, "%s: %s genres '%s', expected '%s' (%s)", what,
          cgt_status_string(status), genre_list(&tags), expected, tags.message);
    cgt_tags_free(&tags);
}

static void test_write(void) {
    static const char *formats[] = {"mp3", "flac", "m4a", "ogg", "opus"};
    static const char *const jazz[] = {"Jazz", "Fusion"};
    static const char *const ambient[] = {"  Ambient  "};
    char name[64], message[256], before[256], after[256];
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        snprintf(name, sizeof name, "write.%s", formats[i]);
        const char *path = path_of(name);
        audio_md5(path, before, sizeof before);
        CHECK(strncmp(before, "MD5=", 4) == 0, "%s: ffmpeg md5: %s", name, before);
        struct stat st_before, st_after;
        stat(path, &st_before);

        cgt_status status = cgt_write_genres(path, jazz, 2, message, sizeof message);
        CHECK(status == CGT_OK, "%s: write: %s (%s)", name, cgt_status_string(status), message);
        expect_genres(path, "Jazz|Fusion", name);
        cgt_tags tags;
        status = cgt_read_tags(path, &tags);
        CHECK(status == CGT_OK && tags.album && strcmp(tags.album, "Test Album") == 0 && tags.album_artist &&
                  strcmp(tags.album_artist, "Test Album Artist") == 0 && tags.track_number == 3,
              "%s: other tags after write: album %s, album artist %s, track %u", name, orempty(tags.album),
              orempty(tags.album_artist), tags.track_number);
        cgt_tags_free(&tags);
        expect_cover(name, front, front_size, 3, 1, "image/jpeg");
        audio_md5(path, after, sizeof after);
        CHECK(strcmp(before, after) == 0, "%s: audio changed by the write: %s -> %s", name, before, after);
        stat(path, &st_after);
        CHECK((st_after.st_mode & 07777) == (st_before.st_mode & 07777), "%s: mode %o -> %o", name,
              st_before.st_mode & 07777, st_after.st_mode & 07777);
        CHECK(st_after.st_ino != st_before.st_ino, "%s: replaced in place (same inode)", name);

        status = cgt_write_genres(path, ambient, 1, message, sizeof message);
        CHECK(status == CGT_OK, "%s: second write: %s (%s)", name, cgt_status_string(status), message);
        expect_genres(path, "Ambient", name);
        status = cgt_write_genres(path, NULL, 0, message, sizeof message);
        CHECK(status == CGT_OK, "%s: removing genres: %s (%s)", name, cgt_status_string(status), message);
        expect_genres(path, "", name);
        audio_md5(path, after, sizeof after);
        CHECK(strcmp(before, after) == 0, "%s: audio changed after three writes", name);
    }
    CHECK(leftovers(dir) == 0, "temporary files left in %s", dir);

    // An ID3v2.3 tag stays v2.3; several genres must survive that.
    copy_file(path_of("id3v23_numeric_genre.mp3"), path_of("write_v23.mp3"));
    cgt_status status = cgt_write_genres(path_of("write_v23.mp3"), jazz, 2, message, sizeof message);
    CHECK(status == CGT_OK, "write_v23.mp3: %s (%s)", cgt_status_string(status), message);
    size_t size;
    unsigned char *data = slurp(path_of("write_v23.mp3"), &size);
    CHECK(data && size > 4 && data[3] == 3, "write_v23.mp3: ID3v2 version %d after write", data ? data[3] : -1);
    free(data);
    if (status == CGT_OK) expect_genres(path_of("write_v23.mp3"), "Jazz|Fusion", "write_v23.mp3");
    // ... unless v2.3 cannot hold them (TagLib 1.13 writes one free-text genre, in Latin-1): v2.4.
    static const char *const custom[] = {"City Pop", "Vaporwave Deluxe"};
    status = cgt_write_genres(path_of("write_v23.mp3"), custom, 2, message, sizeof message);
    CHECK(status == CGT_OK, "write_v23.mp3 custom genres: %s (%s)", cgt_status_string(status), message);
    data = slurp(path_of("write_v23.mp3"), &size);
    CHECK(data && size > 4 && data[3] == 4, "write_v23.mp3: ID3v2 version %d after custom genres", data ? data[3] : -1);
    free(data);
    expect_genres(path_of("write_v23.mp3"), "City Pop|Vaporwave Deluxe", "write_v23.mp3 custom");
    copy_file(path_of("id3v23_numeric_genre.mp3"), path_of("write_v23_utf8.mp3"));
    static const char *const japanese[] = {"J-\xe3\x83\x9d\xe3\x83\x83\xe3\x83\x97"};
    status = cgt_write_genres(path_of("write_v23_utf8.mp3"), japanese, 1, message, sizeof message);
    CHECK(status == CGT_OK, "write_v23_utf8.mp3: %s (%s)", cgt_status_string(status), message);
    expect_genres(path_of("write_v23_utf8.mp3"), japanese[0], "write_v23_utf8.mp3");

    // Through a symbolic link: the target is replaced, the link stays a link.
    copy_file(path_of("cover.flac"), path_of("link_target.flac"));
    unlink(path_of("link.flac"));
    CHECK(symlink("link_target.flac", path_of("link.flac")) == 0, "symlink: %s", strerror(errno));
    status = cgt_write_genres(path_of("link.flac"), jazz, 2, message, sizeof message);
    CHECK(status == CGT_OK, "link.flac: %s (%s)", cgt_status_string(status), message);
    struct stat st;
    CHECK(lstat(path_of("link.flac"), &st) == 0 && S_ISLNK(st.st_mode), "link.flac is no longer a link");
    expect_genres(path_of("link_target.flac"), "Jazz|Fusion", "link_target.flac");
}

// Runs cgt_write_genres in a child that first applies `setup` (limits, lower privileges).
typedef int (*child_setup)(void);

static cgt_status write_in_child(const char *path, child_setup setup, char *message) {
    int fds[2];
    if (pipe(fds) != 0) return CGT_ERR_INTERNAL;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        static const char *const genres[] = {"Noise"};
        cgt_status status = setup() != 0 ? (cgt_status)100 : cgt_write_genres(path, genres, 1, message, 256);
        if (write(fds[1], message, 256) != 256) _exit(101);
        _exit((int)status);
    }
    close(fds[1]);
    memset(message, 0, 256);
    if (read(fds[0], message, 256) < 0) message[0] = '\0';
    close(fds[0]);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    return WIFEXITED(wstatus) ? (cgt_status)WEXITSTATUS(wstatus) : CGT_ERR_INTERNAL;
}

static int limit_file_size(void) {
    signal(SIGXFSZ, SIG_IGN); // turn the signal into EFBIG from write()
    struct rlimit limit = {4096, 4096};
    return setrlimit(RLIMIT_FSIZE, &limit);
}

static int become_nobody(void) {
    if (geteuid() != 0) return 0; // already unprivileged: directory permissions apply
    return setgid(65534) != 0 || setuid(65534) != 0;
}

static void expect_failed_write(const char *what, const char *path, const unsigned char *original, size_t size,
                                cgt_status got, cgt_status expected, const char *message, const char *directory) {
    CHECK(got == expected, "%s: %s, expected %s (%s)", what, cgt_status_string(got), cgt_status_string(expected), message);
    CHECK(message[0] != '\0', "%s: no message", what);
    CHECK(same_bytes(path, original, size), "%s: the original changed", what);
    CHECK(leftovers(directory) == 0, "%s: temporary file left behind", what);
}

static void test_failed_writes(void) {
    static const char *const noise[] = {"Noise"};
    char message[256];
    size_t size;

    unsigned char *original = slurp(path_of("truncated.flac"), &size);
    cgt_status status = cgt_write_genres(path_of("truncated.flac"), noise, 1, message, sizeof message);
    expect_failed_write("truncated.flac", path_of("truncated.flac"), original, size, status, CGT_ERR_CORRUPT, message, dir);
    free(original);

    original = slurp(path_of("not_audio.mp3"), &size);
    status = cgt_write_genres(path_of("not_audio.mp3"), noise, 1, message, sizeof message);
    expect_failed_write("not_audio.mp3", path_of("not_audio.mp3"), original, size, status, CGT_ERR_UNSUPPORTED, message, dir);
    free(original);

    original = slurp(path_of("zlib_bomb.mp3"), &size);
    status = cgt_write_genres(path_of("zlib_bomb.mp3"), noise, 1, message, sizeof message);
    expect_failed_write("zlib_bomb.mp3", path_of("zlib_bomb.mp3"), original, size, status, CGT_ERR_TOO_LARGE, message, dir);
    free(original);

    status = cgt_write_genres(path_of("missing.flac"), noise, 1, message, sizeof message);
    CHECK(status == CGT_ERR_IO && strstr(message, "missing.flac"), "missing.flac: %s (%s)", cgt_status_string(status), message);

    // Bad arguments never touch the file.
    copy_file(path_of("cover.mp3"), path_of("args.mp3"));
    original = slurp(path_of("args.mp3"), &size);
    static const char *const bad_utf8[] = {"Rock", "\xff\xfe"};
    static const char *const blank[] = {"   "};
    static const char *const with_null[] = {"Rock", NULL};
    status = cgt_write_genres(path_of("args.mp3"), bad_utf8, 2, message, sizeof message);
    expect_failed_write("invalid UTF-8", path_of("args.mp3"), original, size, status, CGT_ERR_INVALID_ARGUMENT, message, dir);
    status = cgt_write_genres(path_of("args.mp3"), blank, 1, message, sizeof message);
    expect_failed_write("blank genre", path_of("args.mp3"), original, size, status, CGT_ERR_INVALID_ARGUMENT, message, dir);
    status = cgt_write_genres(path_of("args.mp3"), with_null, 2, message, sizeof message);
    expect_failed_write("NULL genre", path_of("args.mp3"), original, size, status, CGT_ERR_INVALID_ARGUMENT, message, dir);
    status = cgt_write_genres(path_of("args.mp3"), NULL, 3, message, sizeof message);
    expect_failed_write("NULL genres", path_of("args.mp3"), original, size, status, CGT_ERR_INVALID_ARGUMENT, message, dir);
    CHECK(cgt_write_genres(NULL, noise, 1, NULL, 0) == CGT_ERR_INVALID_ARGUMENT, "NULL path with NULL message");

    // A hard link: replacing one name would split the two.
    unlink(path_of("args_link.mp3"));
    CHECK(link(path_of("args.mp3"), path_of("args_link.mp3")) == 0, "link: %s", strerror(errno));
    status = cgt_write_genres(path_of("args.mp3"), noise, 1, message, sizeof message);
    expect_failed_write("hard link", path_of("args.mp3"), original, size, status, CGT_ERR_UNSUPPORTED, message, dir);
    unlink(path_of("args_link.mp3"));
    free(original);

    // The copy fails part way (file size limit): the partial copy is removed.
    copy_file(path_of("cover.wav"), path_of("limit.wav"));
    original = slurp(path_of("limit.wav"), &size);
    status = write_in_child(path_of("limit.wav"), limit_file_size, message);
    expect_failed_write("file size limit", path_of("limit.wav"), original, size, status, CGT_ERR_IO, message, dir);
    free(original);

    // A directory the writer may not create files in.
    char *ro = path_of("readonly");
    mkdir(ro, 0755);
    char target[4200];
    snprintf(target, sizeof target, "%s/a.flac", ro);
    copy_file(path_of("cover.flac"), target);
    chmod(target, 0666);
    chmod(ro, 0555);
    original = slurp(target, &size);
    status = write_in_child(target, become_nobody, message);
    CHECK(status != 100, "could not drop privileges for the read-only directory test");
    expect_failed_write("read-only directory", target, original, size, status, CGT_ERR_IO, message, ro);
    CHECK(strstr(message, "temporary") != NULL, "read-only directory: message '%s'", message);
    chmod(ro, 0755);
    free(original);

    // A read-only file in a writable directory: refused although rename() would work.
    char *rw = path_of("readonly_file");
    mkdir(rw, 0777);
    chmod(rw, 0777);
    snprintf(target, sizeof target, "%s/a.flac", rw);
    copy_file(path_of("cover.flac"), target);
    chmod(target, 0444);
    original = slurp(target, &size);
    status = write_in_child(target, become_nobody, message);
    expect_failed_write("read-only file", target, original, size, status, CGT_ERR_IO, message, rw);
    CHECK(strstr(message, "not writable") != NULL, "read-only file: message '%s'", message);
    free(original);
}

// ---------------------------------------------------------------------------------------------

static void *reader(void *arg) {
    static const char *names[] = {"cover.mp3", "cover.flac", "cover.m4a", "cover.ogg", "cover.opus", "two_pictures.mp3"};
    long *errors = arg;
    for (int i = 0; i < 60; i++) {
        // Each thread's own path buffer: path_of's rotating static buffers are for one thread (four
        // threads sharing them raced, and a path torn mid-write failed a read now and then).
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i % 6]);
        cgt_picture picture;
        cgt_status status = cgt_read_cover(path, 1u << 20, &picture);
        if (status != CGT_OK || picture.size != front_size || memcmp(picture.data, front, front_size) != 0) {
            fprintf(stderr, "concurrent read %d of %s: cover status %d (%s), %zu bytes\n", i, names[i % 6], (int)status,
                    picture.message, status == CGT_OK ? picture.size : 0);
            (*errors)++;
        }
        cgt_picture_free(&picture);
        cgt_tags tags;
        status = cgt_read_tags(path, &tags);
        if (status != CGT_OK || tags.genre_count != 2) {
            fprintf(stderr, "concurrent read %d of %s: tags status %d (%s), %zu genres\n", i, names[i % 6], (int)status,
                    tags.message, status == CGT_OK ? tags.genre_count : 0);
            (*errors)++;
        }
        cgt_tags_free(&tags);
    }
    return NULL;
}

static void test_threads(void) {
    pthread_t threads[4];
    long errors[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, reader, &errors[i]);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    CHECK(errors[0] + errors[1] + errors[2] + errors[3] == 0, "concurrent reads: %ld errors",
          errors[0] + errors[1] + errors[2] + errors[3]);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    front = slurp(path_of("front.jpg"), &front_size);
    back = slurp(path_of("back.jpg"), &back_size);
    if (front == NULL || back == NULL) {
        fprintf(stderr, "%s: no front.jpg/back.jpg (run Tests/audio/make_audio.py first)\n", dir);
        return 2;
    }
    CHECK(strcmp(cgt_status_string(CGT_ERR_NO_COVER), "no cover picture") == 0, "status string");
    CHECK(strcmp(cgt_status_string((cgt_status)999), "unknown status") == 0, "unknown status string");
    test_sniff();
    test_covers();
    test_hostile();
    test_tags();
    test_threads();
    test_write();
    test_failed_writes();
    free(front);
    free(back);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
