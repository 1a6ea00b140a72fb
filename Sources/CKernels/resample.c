// Image resampling: a separable triangle filter whose support grows with the shrink factor, so
// downscaling averages every source pixel (antialiasing) instead of sampling a few of them.
#include "kernel_internal.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    int32_t first;  // first source index
    int32_t count;  // number of taps
} cgk_span;

// For each output index: the source span and its normalized weights (stride max_taps).
static void cgk_filter_weights(int32_t in_size, double start, double region, int32_t out_size, int32_t max_taps,
                               cgk_span *spans, float *weights) {
    const double scale = region / out_size;
    const double widen = scale > 1.0 ? scale : 1.0;
    const double support = widen; // the triangle filter has radius 1, widened when shrinking
    for (int32_t i = 0; i < out_size; i++) {
        const double center = start + (i + 0.5) * scale;
        int32_t lo = (int32_t)floor(center - support + 0.5);
        int32_t hi = (int32_t)floor(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        if (hi - lo > max_taps) hi = lo + max_taps;
        float *w = weights + (ptrdiff_t)i * max_taps;
        double total = 0.0;
        for (int32_t x = lo; x < hi; x++) {
            double t = fabs((x + 0.5 - center) / widen);
            double v = t < 1.0 ? 1.0 - t : 0.0;
            w[x - lo] = (float)v;
            total += v;
        }
        if (hi <= lo || total <= 0.0) { // window outside the image: repeat the nearest edge pixel
            int32_t nearest = (int32_t)floor(center);
            lo = nearest < 0 ? 0 : nearest >= in_size ? in_size - 1 : nearest;
            hi = lo + 1;
            w[0] = 1.0f;
            total = 1.0;
        }
        for (int32_t x = 0; x < hi - lo; x++) w[x] = (float)(w[x] / total);
        spans[i].first = lo;
        spans[i].count = hi - lo;
    }
}

// Vertical pass: output row j of the 8-bit source rows' columns [col_lo, col_lo + cols), as floats.
// Contiguous across the row, so it vectorizes (widening loads and multiply-adds).
CGK_DISPATCH(static, cgk_resample_vertical,
             (const uint8_t *src, ptrdiff_t src_stride, int32_t col_lo, int32_t cols, cgk_span s, const float *w,
              float *dst),
             (src, src_stride, col_lo, cols, s, w, dst)) {
    const int32_t n = cols * 3;
    for (int32_t k = 0; k < n; k++) dst[k] = 0.0f;
    for (int32_t t = 0; t < s.count; t++) {
        const uint8_t *line = src + (ptrdiff_t)(s.first + t) * src_stride + (ptrdiff_t)col_lo * 3;
        const float wt = w[t];
        for (int32_t k = 0; k < n; k++) dst[k] += wt * (float)line[k];
    }
}

// Horizontal pass over one vertically filtered row: output pixel i (stored at out_w - 1 - i when mirroring).
CGK_DISPATCH(static, cgk_resample_horizontal,
             (const float *row, int32_t col_lo, const cgk_span *spans, const float *weights, int32_t taps, int32_t
              out_w, int mirror, float *dst),
             (row, col_lo, spans, weights, taps, out_w, mirror, dst)) {
    for (int32_t i = 0; i < out_w; i++) {
        const cgk_span s = spans[i];
        const float *w = weights + (ptrdiff_t)i * taps;
        const float *p = row + (ptrdiff_t)(s.first - col_lo) * 3;
        float r = 0.0f, g = 0.0f, b = 0.0f;
        for (int32_t t = 0; t < s.count; t++) {
            r += w[t] * p[3 * t];
            g += w[t] * p[3 * t + 1];
            b += w[t] * p[3 * t + 2];
        }
        const int32_t o = mirror ? out_w - 1 - i : i;
        dst[3 * o] = r;
        dst[3 * o + 1] = g;
        dst[3 * o + 2] = b;
    }
}

int cgk_resample_rgb(const uint8_t *src, int32_t src_w, int32_t src_h, ptrdiff_t src_stride, double x0, double y0,
                     double region_w, double region_h, int32_t out_w, int32_t out_h, int mirror, float *out) {
    if (src == NULL || out == NULL || src_w <= 0 || src_h <= 0 || out_w <= 0 || out_h <= 0 || !(region_w > 0.0) ||
        !(region_h > 0.0) || src_stride < (ptrdiff_t)src_w * 3 || !isfinite(x0) || !isfinite(y0))
        return -1;
    const double scale_x = region_w / out_w, scale_y = region_h / out_h;
    const int32_t taps_x = 2 * (int32_t)ceil(scale_x > 1.0 ? scale_x : 1.0) + 2;
    const int32_t taps_y = 2 * (int32_t)ceil(scale_y > 1.0 ? scale_y : 1.0) + 2;
    cgk_span *spans_x = (cgk_span *)malloc(sizeof(cgk_span) * (size_t)out_w);
    cgk_span *spans_y = (cgk_span *)malloc(sizeof(cgk_span) * (size_t)out_h);
    float *weights_x = (float *)malloc(sizeof(float) * (size_t)out_w * taps_x);
    float *weights_y = (float *)malloc(sizeof(float) * (size_t)out_h * taps_y);
    int status = 0;
    float *row = NULL;
    if (spans_x == NULL || spans_y == NULL || weights_x == NULL || weights_y == NULL) {
        status = -2;
        goto done;
    }
    cgk_filter_weights(src_w, x0, region_w, out_w, taps_x, spans_x, weights_x);
    cgk_filter_weights(src_h, y0, region_h, out_h, taps_y, spans_y, weights_y);

    // Vertical pass first, on the 8-bit rows and only the columns the horizontal pass reads: a
    // shrinking resize then filters out_h rows horizontally (scalar per pixel) instead of every
    // source row the region touches. One row of the intermediate at a time, so it stays in L1/L2.
    int32_t col_lo = spans_x[0].first, col_hi = spans_x[0].first + spans_x[0].count;
    for (int32_t i = 1; i < out_w; i++) {
        if (spans_x[i].first < col_lo) col_lo = spans_x[i].first;
        if (spans_x[i].first + spans_x[i].count > col_hi) col_hi = spans_x[i].first + spans_x[i].count;
    }
    const int32_t cols = col_hi - col_lo;
    row = (float *)malloc(sizeof(float) * (size_t)cols * 3);
    if (row == NULL) {
        status = -2;
        goto done;
    }
    for (int32_t j = 0; j < out_h; j++) {
        cgk_resample_vertical(src, src_stride, col_lo, cols, spans_y[j], weights_y + (ptrdiff_t)j * taps_y, row);
        cgk_resample_horizontal(row, col_lo, spans_x, weights_x, taps_x, out_w, mirror, out + (ptrdiff_t)j * out_w * 3);
    }
done:
    free(spans_x);
    free(spans_y);
    free(weights_x);
    free(weights_y);
    free(row);
    return status;
}
