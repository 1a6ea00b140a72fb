/* classify.c - print the three most probable genres of each cover image.
 *
 *   make -C examples/c            (uses pkg-config covergenre; run scripts/build.sh first)
 *   examples/c/classify models/covergenre-default.cgm cover.jpg [more.png ...]
 */
#include <covergenre.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.cgm IMAGE...\n", argv[0]);
        return 2;
    }
    if (cg_api_version() / 10000 != CG_API_VERSION_MAJOR) {
        fprintf(stderr, "libcovergenre %s does not match this header\n", cg_version_string());
        return 1;
    }
    cg_model *model = NULL;
    cg_status status = cg_model_load(argv[1], &model);
    if (status != CG_OK) {
        fprintf(stderr, "cannot load %s: %s (%s)\n", argv[1], cg_last_error(), cg_status_string(status));
        return 1;
    }
    int failures = 0;
    for (int i = 2; i < argc; i++) {
        cg_prediction top[3];
        size_t count = 0;
        status = cg_classify_file(model, argv[i], 3, top, &count);
        if (status != CG_OK) {
            fprintf(stderr, "%s: %s (%s)\n", argv[i], cg_last_error(), cg_status_string(status));
            failures++;
            continue;
        }
        printf("%s\n", argv[i]);
        for (size_t k = 0; k < count; k++) printf("  %-12s %.3f\n", top[k].label, top[k].probability);
    }
    cg_model_free(model);
    return failures ? 1 : 0;
}
