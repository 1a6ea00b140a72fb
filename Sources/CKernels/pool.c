// Pooling: max (with optional argmax for training), global and adaptive average, channel stats.
#include "kernel_internal.h"

#include <math.h>


// The maximum over a window of kh x kw pixels (row stride `row` floats, C channels each) into
// y: sixteen channels at a time kept in a register across the window and stored once. A NaN
// wins only from the first pixel, as in the loop with argmax.
CGK_INLINE void cgk_max_window(const float *x, ptrdiff_t row, int32_t C, int32_t kh, int32_t kw, float *restrict y) {
    int32_t c = 0;
    for (; c + 16 <= C; c += 16) {
        cgk_v16 m = cgk_load16(x + c);
        for (int32_t i = 0; i < kh; i++) {
            for (int32_t j = i == 0; j < kw; j++) {
                const cgk_v16 v = cgk_load16(x + i * row + (ptrdiff_t)j * C + c);
                m = v > m ? v : m;
            }
        }
        cgk_store16(y + c, m);
    }
    for (; c < C; c++) {
        float m = x[c];
        for (int32_t i = 0; i < kh; i++) {
            for (int32_t j = i == 0; j < kw; j++) {
                const float v = x[i * row + (ptrdiff_t)j * C + c];
                m = v > m ? v : m;
            }
        }
        y[c] = m;
    }
}

CGK_DISPATCH(, cgk_maxpool,
             (const float *x, const cgk_window *w, int32_t oh_begin, int32_t oh_end, float *y, int32_t *argmax),
             (x, w, oh_begin, oh_end, y, argmax)) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, KW = w->kernel_w;
    for (int32_t oh = oh_begin; oh < oh_end; oh++) {
        const int32_t ih0 = oh * w->stride_h - w->pad_top;
        const int32_t kh_lo = cgk_max(0, -ih0), kh_hi = cgk_min(KH, H - ih0);
        for (int32_t ow = 0; ow < w->out_width; ow++) {
            const int32_t iw0 = ow * w->stride_w - w->pad_left;
            const int32_t kw_lo = cgk_max(0, -iw0), kw_hi = cgk_min(KW, W - iw0);
            const ptrdiff_t out = ((ptrdiff_t)oh * w->out_width + ow) * C;
            float *restrict yp = y + out;
            if (argmax == NULL && kh_lo < kh_hi && kw_lo < kw_hi) {
                cgk_max_window(x + ((ptrdiff_t)(ih0 + kh_lo) * W + iw0 + kw_lo) * C, (ptrdiff_t)W * C, C, kh_hi - kh_lo,
                               kw_hi - kw_lo, yp);
                continue;
            }
            int first = 1;
            for (int32_t kh = kh_lo; kh < kh_hi; kh++) {
                for (int32_t kw = kw_lo; kw < kw_hi; kw++) {
                    const ptrdiff_t in = ((ptrdiff_t)(ih0 + kh) * W + iw0 + kw) * C;
                    // Only with argmax here (cgk_max_window took the rest). Selects, not a branch
                    // per element: the branch mispredicted on real activations and kept the loop
                    // scalar (7% of a training step).
                    const float *restrict xp = x + in;
                    int32_t *restrict ap = argmax + out;
                    for (int32_t c = 0; c < C; c++) {
                        const int take = first || xp[c] > yp[c];
                        yp[c] = take ? xp[c] : yp[c];
                        ap[c] = take ? (int32_t)(in + c) : ap[c];
                    }
                    first = 0;
                }
            }
            if (first) { // a window entirely in the padding (impossible with sane geometry)
                for (int32_t c = 0; c < C; c++) yp[c] = 0.0f;
                if (argmax != NULL) for (int32_t c = 0; c < C; c++) argmax[out + c] = -1;
            }
        }
    }
}

void cgk_maxpool_backward(const float *dy, const int32_t *argmax, ptrdiff_t n, float *dx) {
    for (ptrdiff_t i = 0; i < n; i++) {
        if (argmax[i] >= 0) dx[argmax[i]] += dy[i];
    }
}

CGK_DISPATCH(, cgk_global_avgpool,
             (const float *x, ptrdiff_t pixels, int32_t channels, float *y),
             (x, pixels, channels, y)) {
    for (int32_t c = 0; c < channels; c++) y[c] = 0.0f;
    for (ptrdiff_t p = 0; p < pixels; p++) {
        const float *restrict xp = x + p * channels;
        float *restrict yp = y;
        for (int32_t c = 0; c < channels; c++) yp[c] += xp[c];
    }
    const float inv = pixels > 0 ? 1.0f / (float)pixels : 0.0f;
    for (int32_t c = 0; c < channels; c++) y[c] *= inv;
}

CGK_DISPATCH(, cgk_channel_mean_std,
             (const float *x, ptrdiff_t pixels, int32_t channels, float *mean, float *std),
             (x, pixels, channels, mean, std)) {
    // Two passes in float: the mean first, then squared deviations, which stays accurate for the
    // large, nearly constant activations where E[x^2] - E[x]^2 would cancel.
    cgk_global_avgpool(x, pixels, channels, mean);
    for (int32_t c = 0; c < channels; c++) std[c] = 0.0f;
    for (ptrdiff_t p = 0; p < pixels; p++) {
        const float *restrict xp = x + p * channels;
        float *restrict sp = std;
        for (int32_t c = 0; c < channels; c++) {
            float d = xp[c] - mean[c];
            sp[c] += d * d;
        }
    }
    const float inv = pixels > 0 ? 1.0f / (float)pixels : 0.0f;
    for (int32_t c = 0; c < channels; c++) std[c] = sqrtf(std[c] * inv);
}

void cgk_adaptive_avgpool(const float *x, int32_t height, int32_t width, int32_t channels, int32_t out_height,
                          int32_t out_width, float *y) {
    for (int32_t oh = 0; oh < out_height; oh++) {
        const int32_t h0 = (int32_t)(((int64_t)oh * height) / out_height);
        const int32_t h1 = (int32_t)((((int64_t)oh + 1) * height + out_height - 1) / out_height);
        for (int32_t ow = 0; ow < out_width; ow++) {
            const int32_t w0 = (int32_t)(((int64_t)ow * width) / out_width);
            const int32_t w1 = (int32_t)((((int64_t)ow + 1) * width + out_width - 1) / out_width);
            float *yp = y + ((ptrdiff_t)oh * out_width + ow) * channels;
            for (int32_t c = 0; c < channels; c++) yp[c] = 0.0f;
            for (int32_t ih = h0; ih < h1; ih++)
                for (int32_t iw = w0; iw < w1; iw++) {
                    const float *xp = x + ((ptrdiff_t)ih * width + iw) * channels;
                    for (int32_t c = 0; c < channels; c++) yp[c] += xp[c];
                }
            const float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
            for (int32_t c = 0; c < channels; c++) yp[c] *= inv;
        }
    }
}
