// Convolution helpers: im2col/col2im for the GEMM path, and the depthwise convolution, which has
// too little arithmetic per weight for a GEMM and runs as its own loop, vectorized over channels.
#include "kernel_internal.h"

#include <string.h>

static inline int32_t cgk_max(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t cgk_min(int32_t a, int32_t b) { return a < b ? a : b; }

CGK_MULTIVERSION
void cgk_im2col(const float *x, const cgk_window *w, int32_t channel_begin, int32_t channel_count,
                ptrdiff_t row_begin, ptrdiff_t row_end, float *col, ptrdiff_t ldcol) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, KW = w->kernel_w;
    const size_t tap_bytes = (size_t)channel_count * sizeof(float);
    // With all channels taken, the KW taps of one kernel row are adjacent in the input: one copy.
    const int whole_rows = channel_count == C && w->stride_w >= 1;
    for (ptrdiff_t r = row_begin; r < row_end; r++) {
        const int32_t oh = (int32_t)(r / w->out_width), ow = (int32_t)(r % w->out_width);
        const int32_t ih0 = oh * w->stride_h - w->pad_top, iw0 = ow * w->stride_w - w->pad_left;
        float *dst = col + (r - row_begin) * ldcol;
        for (int32_t kh = 0; kh < KH; kh++) {
            const int32_t ih = ih0 + kh;
            if (ih < 0 || ih >= H) {
                memset(dst, 0, tap_bytes * KW);
                dst += (ptrdiff_t)channel_count * KW;
                continue;
            }
            const float *row = x + (ptrdiff_t)ih * W * C + channel_begin;
            if (whole_rows && iw0 >= 0 && iw0 + KW <= W) {
                memcpy(dst, row + (ptrdiff_t)iw0 * C, tap_bytes * KW);
                dst += (ptrdiff_t)channel_count * KW;
                continue;
            }
            for (int32_t kw = 0; kw < KW; kw++) {
                const int32_t iw = iw0 + kw;
                if (iw < 0 || iw >= W) memset(dst, 0, tap_bytes);
                else memcpy(dst, row + (ptrdiff_t)iw * C, tap_bytes);
                dst += channel_count;
            }
        }
    }
}

CGK_MULTIVERSION
void cgk_col2im(const float *col, ptrdiff_t ldcol, const cgk_window *w, int32_t channel_begin, int32_t channel_count,
                ptrdiff_t row_begin, ptrdiff_t row_end, float *dx) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, KW = w->kernel_w;
    for (ptrdiff_t r = row_begin; r < row_end; r++) {
        const int32_t oh = (int32_t)(r / w->out_width), ow = (int32_t)(r % w->out_width);
        const int32_t ih0 = oh * w->stride_h - w->pad_top, iw0 = ow * w->stride_w - w->pad_left;
        const float *src = col + (r - row_begin) * ldcol;
        for (int32_t kh = 0; kh < KH; kh++) {
            const int32_t ih = ih0 + kh;
            for (int32_t kw = 0; kw < KW; kw++, src += channel_count) {
                const int32_t iw = iw0 + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                float *restrict d = dx + ((ptrdiff_t)ih * W + iw) * C + channel_begin;
                const float *restrict s = src;
                for (int32_t c = 0; c < channel_count; c++) d[c] += s[c];
            }
        }
    }
}

// Channels are processed in blocks small enough for the accumulators to stay in registers.
#define CGK_DW_BLOCK 64

CGK_MULTIVERSION
void cgk_depthwise(const float *x, const cgk_window *w, const float *weight, const float *bias, int activation,
                   int32_t oh_begin, int32_t oh_end, float *y) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, KW = w->kernel_w;
    const int32_t OW = w->out_width;
    float acc[CGK_DW_BLOCK];
    for (int32_t oh = oh_begin; oh < oh_end; oh++) {
        const int32_t ih0 = oh * w->stride_h - w->pad_top;
        const int32_t kh_lo = cgk_max(0, -ih0), kh_hi = cgk_min(KH, H - ih0);
        for (int32_t ow = 0; ow < OW; ow++) {
            const int32_t iw0 = ow * w->stride_w - w->pad_left;
            const int32_t kw_lo = cgk_max(0, -iw0), kw_hi = cgk_min(KW, W - iw0);
            float *yp = y + ((ptrdiff_t)oh * OW + ow) * C;
            for (int32_t c0 = 0; c0 < C; c0 += CGK_DW_BLOCK) {
                const int32_t cn = cgk_min(CGK_DW_BLOCK, C - c0);
                if (bias != NULL) for (int32_t c = 0; c < cn; c++) acc[c] = bias[c0 + c];
                else for (int32_t c = 0; c < cn; c++) acc[c] = 0.0f;
                for (int32_t kh = kh_lo; kh < kh_hi; kh++) {
                    const float *xrow = x + ((ptrdiff_t)(ih0 + kh) * W + iw0) * C + c0;
                    const float *wrow = weight + (ptrdiff_t)kh * KW * C + c0;
                    for (int32_t kw = kw_lo; kw < kw_hi; kw++) {
                        const float *restrict xp = xrow + (ptrdiff_t)kw * C;
                        const float *restrict wp = wrow + (ptrdiff_t)kw * C;
                        for (int32_t c = 0; c < cn; c++) acc[c] += xp[c] * wp[c];
                    }
                }
                for (int32_t c = 0; c < cn; c++) yp[c0 + c] = cgk_activate(acc[c], activation);
            }
        }
    }
}

CGK_MULTIVERSION
void cgk_depthwise_backward(const float *x, const float *dy, const cgk_window *w, const float *weight,
                            float *dx, float *dweight) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, KW = w->kernel_w;
    for (int32_t oh = 0; oh < w->out_height; oh++) {
        const int32_t ih0 = oh * w->stride_h - w->pad_top;
        const int32_t kh_lo = cgk_max(0, -ih0), kh_hi = cgk_min(KH, H - ih0);
        for (int32_t ow = 0; ow < w->out_width; ow++) {
            const int32_t iw0 = ow * w->stride_w - w->pad_left;
            const int32_t kw_lo = cgk_max(0, -iw0), kw_hi = cgk_min(KW, W - iw0);
            const float *restrict g = dy + ((ptrdiff_t)oh * w->out_width + ow) * C;
            for (int32_t kh = kh_lo; kh < kh_hi; kh++) {
                for (int32_t kw = kw_lo; kw < kw_hi; kw++) {
                    const ptrdiff_t in = ((ptrdiff_t)(ih0 + kh) * W + iw0 + kw) * C;
                    const ptrdiff_t tap = ((ptrdiff_t)kh * KW + kw) * C;
                    if (dx != NULL) {
                        float *restrict d = dx + in;
                        const float *restrict wp = weight + tap;
                        for (int32_t c = 0; c < C; c++) d[c] += g[c] * wp[c];
                    }
                    if (dweight != NULL) {
                        float *restrict dw = dweight + tap;
                        const float *restrict xp = x + in;
                        for (int32_t c = 0; c < C; c++) dw[c] += g[c] * xp[c];
                    }
                }
            }
        }
    }
}
