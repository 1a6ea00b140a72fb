// Convolution helpers: im2col/col2im for the GEMM path, and the depthwise convolution, which has
// too little arithmetic per weight for a GEMM and runs as its own loop, vectorized over channels.
#include "kernel_internal.h"

#include <string.h>

CGK_DISPATCH(, cgk_im2col,
             (const float *x, const cgk_window *w, int32_t channel_begin, int32_t channel_count, ptrdiff_t row_begin,
              ptrdiff_t row_end, float *col, ptrdiff_t ldcol),
             (x, w, channel_begin, channel_count, row_begin, row_end, col, ldcol)) {
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
                cgk_copy_floats(dst, row + (ptrdiff_t)iw0 * C, (size_t)channel_count * KW);
                dst += (ptrdiff_t)channel_count * KW;
                continue;
            }
            for (int32_t kw = 0; kw < KW; kw++) {
                const int32_t iw = iw0 + kw;
                if (iw < 0 || iw >= W) memset(dst, 0, tap_bytes);
                else cgk_copy_floats(dst, row + (ptrdiff_t)iw * C, (size_t)channel_count);
                dst += channel_count;
            }
        }
    }
}

// The strip for C channels (a constant where inlined: three, RGB, is the common case).
CGK_INLINE void cgk_strip(const int32_t C, const float *x, const cgk_window *w, int32_t oh, float *strip) {
    const int32_t H = w->height, W = w->width, KH = w->kernel_h;
    const int32_t span = (w->out_width - 1) * w->stride_w + w->kernel_w;
    const ptrdiff_t step = (ptrdiff_t)KH * C;
    // Input columns xp - pad_left inside the image: xp in [lo, hi).
    const int32_t lo = cgk_min(w->pad_left, span), hi = cgk_max(lo, cgk_min(W + w->pad_left, span));
    for (int32_t kh = 0; kh < KH; kh++) {
        const int32_t ih = oh * w->stride_h - w->pad_top + kh;
        float *dst = strip + (ptrdiff_t)kh * C;
        const int inside = ih >= 0 && ih < H;
        int32_t xp = 0;
        for (; xp < (inside ? lo : span); xp++, dst += step)
            for (int32_t c = 0; c < C; c++) dst[c] = 0.0f;
        if (!inside) continue;
        const float *src = x + ((ptrdiff_t)ih * W + (xp - w->pad_left)) * C;
        for (; xp < hi; xp++, dst += step, src += C)
            for (int32_t c = 0; c < C; c++) dst[c] = src[c];
        for (; xp < span; xp++, dst += step)
            for (int32_t c = 0; c < C; c++) dst[c] = 0.0f;
    }
}

// The strip form of im2col, for convolutions with few input channels (stems), where im2col's
// copies of a few floats per tap cost as much as the multiply-adds (a 256x256x3 stem, 32 outputs:
// 2.0 ms as im2col tiles, 1.4 ms as strips, one core). One output row's strip holds, for every
// input column the row reads (padding included), the KH input rows' C channels: strip[xp][kh][c].
// Output pixel ow's GEMM row is then KW * KH * C consecutive floats at ow * stride_w * KH * C:
// rows overlap, with columns in (kw, kh, c) order, so the weights are packed in that order.
CGK_DISPATCH(, cgk_im2col_strip, (const float *x, const cgk_window *w, int32_t oh, float *strip), (x, w, oh, strip)) {
    if (w->channels == 3) cgk_strip(3, x, w, oh, strip);
    else cgk_strip(w->channels, x, w, oh, strip);
}

CGK_DISPATCH(, cgk_col2im,
             (const float *col, ptrdiff_t ldcol, const cgk_window *w, int32_t channel_begin, int32_t channel_count,
              ptrdiff_t row_begin, ptrdiff_t row_end, float *dx),
             (col, ldcol, w, channel_begin, channel_count, row_begin, row_end, dx)) {
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

// The depthwise convolution works one output row at a time from the input rows that row reads:
// rows[kh] is input row oh * stride_h - pad_top + kh (W x C floats, NHWC), used for kh in
// [kh_lo, kh_hi) (the others are padding). cgk_depthwise points them into the input tensor;
// the fused expand-and-depthwise step (ExpandDepthwise.swift) into the few expanded rows it keeps.

#define CGK_DW 16 // channels per vector

// Activation of 16 channels, stored.
CGK_INLINE void cgk_dw_finish(float *yp, cgk_v16 v, int activation) {
    if (activation == CGK_ACT_RELU || activation == CGK_ACT_RELU6) v = v > 0.0f ? v : 0.0f;
    if (activation == CGK_ACT_RELU6) v = v < 6.0f ? v : 6.0f;
    cgk_store16(yp, v);
}

// `blocks` (1..4, a constant where inlined) 16-channel sums of one pixel side by side, from
// channel c, over the taps kh in [kh_lo, kh_hi), kw in [kw_lo, kw_hi).
CGK_INLINE void cgk_dw_pixel_blocks(const int blocks, const float *const *rows, int32_t kh_lo, int32_t kh_hi,
                                    int32_t kw_lo, int32_t kw_hi, int32_t iw0, int32_t C, int32_t KW, const float *weight,
                                    const float *bias, int activation, int32_t c, float *yp) {
    cgk_v16 acc[4];
    for (int b = 0; b < blocks; b++) acc[b] = bias != NULL ? cgk_load16(bias + c + b * CGK_DW) : (cgk_v16)0.0f;
    for (int32_t kh = kh_lo; kh < kh_hi; kh++) {
        const float *xp = rows[kh] + (ptrdiff_t)(iw0 + kw_lo) * C + c;
        const float *wp = weight + ((ptrdiff_t)kh * KW + kw_lo) * C + c;
        for (int32_t kw = kw_lo; kw < kw_hi; kw++, xp += C, wp += C)
            for (int b = 0; b < blocks; b++) acc[b] += cgk_load16(xp + b * CGK_DW) * cgk_load16(wp + b * CGK_DW);
    }
    for (int b = 0; b < blocks; b++) cgk_dw_finish(yp + c + b * CGK_DW, acc[b], activation);
}

// One output pixel, channels [c_begin, c_end), any position (taps outside the image skipped): the
// columns at the image's edges (two to four per row) and the pixels the groups of four leave.
// With one 16-channel sum at a time such a pixel is bound by the latency of its chain of
// multiply-adds; skipping the edges, as a timing experiment, made the 7x7x1152 3x3 layer twice as
// fast (a Zen 4 EPYC). So 64 channels go at once, four independent sums (7x7x1152 5x5: 0.12 ->
// 0.08 ms). Copying the edge columns into a zero-padded strip for the 4-pixel loop measured
// slower: the copy cost more than it saved.
CGK_INLINE void cgk_dw_pixel(const float *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w,
                             const float *weight, const float *bias, int activation, int32_t ow, int32_t c_begin,
                             int32_t c_end, float *y_row) {
    const int32_t W = w->width, C = w->channels, KW = w->kernel_w;
    const int32_t iw0 = ow * w->stride_w - w->pad_left;
    const int32_t kw_lo = cgk_max(0, -iw0), kw_hi = cgk_min(KW, W - iw0);
    float *yp = y_row + (ptrdiff_t)ow * C;
    int32_t c = c_begin;
    for (; c + 4 * CGK_DW <= c_end; c += 4 * CGK_DW)
        cgk_dw_pixel_blocks(4, rows, kh_lo, kh_hi, kw_lo, kw_hi, iw0, C, KW, weight, bias, activation, c, yp);
    for (; c + CGK_DW <= c_end; c += CGK_DW)
        cgk_dw_pixel_blocks(1, rows, kh_lo, kh_hi, kw_lo, kw_hi, iw0, C, KW, weight, bias, activation, c, yp);
    for (; c < c_end; c++) {
        float acc = bias != NULL ? bias[c] : 0.0f;
        for (int32_t kh = kh_lo; kh < kh_hi; kh++)
            for (int32_t kw = kw_lo; kw < kw_hi; kw++)
                acc += rows[kh][(ptrdiff_t)(iw0 + kw) * C + c] * weight[((ptrdiff_t)kh * KW + kw) * C + c];
        yp[c] = cgk_activate(acc, activation);
    }
}

// Channels go 16 at a time (a cgk_v16) and output pixels 4 at a time, so each weight vector
// loaded serves four pixels and the accumulators stay in registers. Written with cgk_v16 rather
// than float[16] loops: from those, clang kept a pointer per pixel and tap and spilled them.
// The pixels left over (fewer than four, and the edge columns) go one at a time through
// cgk_dw_pixel, 64 channels at once. KW is a constant where the callers below pass 3 or 5 (the
// kernels EfficientNet uses), so the taps of a row unroll: 15% faster on Lite0's shapes.

// One output row (y_row: its first pixel), channels [c_begin, c_end).
CGK_INLINE void cgk_dw_row_k(const int32_t KW, const int32_t SW, const float *const *rows, int32_t kh_lo, int32_t kh_hi,
                             const cgk_window *w, const float *weight, const float *bias, int activation, int32_t c_begin,
                             int32_t c_end, float *y_row) {
    const int32_t C = w->channels;
    const int32_t OW = w->out_width, PL = w->pad_left;
    int32_t ow_lo, ow_hi;
    cgk_interior_columns(w, KW, SW, &ow_lo, &ow_hi);
    const int32_t blocks = c_begin + (c_end - c_begin) / CGK_DW * CGK_DW;
    const ptrdiff_t step = (ptrdiff_t)SW * C; // from one output pixel's window to the next's
    for (int32_t ow = 0; ow < ow_lo; ow++) cgk_dw_pixel(rows, kh_lo, kh_hi, w, weight, bias, activation, ow, c_begin, c_end, y_row);
    for (int32_t ow = ow_hi; ow < OW; ow++) cgk_dw_pixel(rows, kh_lo, kh_hi, w, weight, bias, activation, ow, c_begin, c_end, y_row);
    for (int32_t c0 = c_begin; c0 < blocks; c0 += CGK_DW) {
        const cgk_v16 init = bias != NULL ? cgk_load16(bias + c0) : (cgk_v16)0.0f;
        int32_t ow = ow_lo;
        for (; ow + 4 <= ow_hi; ow += 4) {
            cgk_v16 a0 = init, a1 = init, a2 = init, a3 = init;
            for (int32_t kh = kh_lo; kh < kh_hi; kh++) {
                const float *xp = rows[kh] + ((ptrdiff_t)ow * SW - PL) * C + c0;
                const float *wp = weight + (ptrdiff_t)kh * KW * C + c0;
                for (int32_t kw = 0; kw < KW; kw++) {
                    const cgk_v16 wv = cgk_load16(wp + kw * C);
                    a0 += cgk_load16(xp + kw * C) * wv;
                    a1 += cgk_load16(xp + kw * C + step) * wv;
                    a2 += cgk_load16(xp + kw * C + 2 * step) * wv;
                    a3 += cgk_load16(xp + kw * C + 3 * step) * wv;
                }
            }
            float *yp = y_row + (ptrdiff_t)ow * C + c0;
            cgk_dw_finish(yp, a0, activation);
            cgk_dw_finish(yp + C, a1, activation);
            cgk_dw_finish(yp + 2 * C, a2, activation);
            cgk_dw_finish(yp + 3 * C, a3, activation);
        }
    }
    // The pixels the groups of four left, every channel; then the last channels (fewer than 16)
    // of the grouped pixels.
    const int32_t grouped_end = ow_lo + (ow_hi - ow_lo) / 4 * 4;
    for (int32_t ow = grouped_end; ow < ow_hi; ow++)
        cgk_dw_pixel(rows, kh_lo, kh_hi, w, weight, bias, activation, ow, c_begin, c_end, y_row);
    if (blocks < c_end)
        for (int32_t ow = ow_lo; ow < grouped_end; ow++)
            cgk_dw_pixel(rows, kh_lo, kh_hi, w, weight, bias, activation, ow, blocks, c_end, y_row);
}

// Kernel width and stride as constants for EfficientNet's kernels (3x3, 5x5; stride 1 or 2): the
// taps of a row unroll, and neighbouring pixels' windows overlap in known places, so the compiler
// loads each input vector a row of four pixels reads once (stride 1, 3 taps: 6 loads, not 12).
#define CGK_DW_SHAPES(call, KW_, SW_)                                                                  \
    if (KW_ == 3 && SW_ == 1) call(3, 1);                                                                  \
    else if (KW_ == 3 && SW_ == 2) call(3, 2);                                                             \
    else if (KW_ == 5 && SW_ == 1) call(5, 1);                                                             \
    else if (KW_ == 5 && SW_ == 2) call(5, 2);                                                             \
    else call(KW_, SW_)

CGK_INLINE void cgk_dw_row(const float *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w,
                           const float *weight, const float *bias, int activation, int32_t c_begin, int32_t c_end,
                           float *y_row) {
#define CGK_DW_ROW(KW, SW) cgk_dw_row_k(KW, SW, rows, kh_lo, kh_hi, w, weight, bias, activation, c_begin, c_end, y_row)
    CGK_DW_SHAPES(CGK_DW_ROW, w->kernel_w, w->stride_w);
#undef CGK_DW_ROW
}

// Two output rows at once (cgk_depthwise). One row's groups of four pixels load a weight vector
// and four input vectors for four multiply-adds: bound by loads, at about half the machine's
// multiply-add rate. Rows oh and oh + 1 read the same input rows, shifted by the stride: each
// input vector loaded serves both (with the two rows' weights for it), 0.75 loads per multiply-add.
// Lite0's shapes ran 1.2-1.7x faster (one core of a Zen 4 EPYC, hot caches; docs/quantization.md). Each output
// value still sums its taps in the same order from the bias, so both ways give the same bits.
//
// rows[r] is input row (oh * stride_h - pad_top + r) for r in [0, kernel_h + stride_h): the top
// row reads rows[kh] for kh in [t_lo, t_hi), the bottom one rows[kh + stride_h] for kh in
// [b_lo, b_hi). P pixels of 16 channels from ow, c0 (P: 4 with AVX-512's 32 registers, 2 with
// AVX2's 16, 1 for the rest, so the 2P sums stay in registers).
CGK_INLINE void cgk_dw_pair_group(const int P, const int32_t KW, const int32_t SW, const float *const *rows, int32_t SH, int32_t t_lo,
                                  int32_t t_hi, int32_t b_lo, int32_t b_hi, const cgk_window *w, const float *weight,
                                  cgk_v16 init, int activation, int32_t ow, int32_t c0, float *y_top, float *y_bottom) {
    const int32_t C = w->channels;
    const ptrdiff_t step = (ptrdiff_t)SW * C;
    const ptrdiff_t x0 = ((ptrdiff_t)ow * SW - w->pad_left) * C + c0;
    // In rows[] terms the bottom row reads [b_lo + SH, b_hi + SH), which starts and ends no
    // earlier than the top row's [t_lo, t_hi): rows read by the top only, then by both, then by
    // the bottom only.
    const int32_t both_lo = cgk_max(t_lo, b_lo + SH), both_hi = cgk_min(t_hi, b_hi + SH);
    cgk_v16 a[4], b[4];
    for (int p = 0; p < P; p++) a[p] = b[p] = init;
    for (int32_t r = t_lo; r < cgk_min(t_hi, both_lo); r++) {
        const float *xp = rows[r] + x0, *wt = weight + (ptrdiff_t)r * KW * C + c0;
        for (int32_t kw = 0; kw < KW; kw++) {
            const cgk_v16 vt = cgk_load16(wt + kw * C);
            for (int p = 0; p < P; p++) a[p] += cgk_load16(xp + kw * C + p * step) * vt;
        }
    }
    for (int32_t r = both_lo; r < both_hi; r++) {
        const float *xp = rows[r] + x0;
        const float *wt = weight + (ptrdiff_t)r * KW * C + c0, *wb = weight + (ptrdiff_t)(r - SH) * KW * C + c0;
        for (int32_t kw = 0; kw < KW; kw++) {
            const cgk_v16 vt = cgk_load16(wt + kw * C), vb = cgk_load16(wb + kw * C);
            for (int p = 0; p < P; p++) {
                const cgk_v16 xv = cgk_load16(xp + kw * C + p * step);
                a[p] += xv * vt;
                b[p] += xv * vb;
            }
        }
    }
    for (int32_t r = cgk_max(both_hi, b_lo + SH); r < b_hi + SH; r++) {
        const float *xp = rows[r] + x0, *wb = weight + (ptrdiff_t)(r - SH) * KW * C + c0;
        for (int32_t kw = 0; kw < KW; kw++) {
            const cgk_v16 vb = cgk_load16(wb + kw * C);
            for (int p = 0; p < P; p++) b[p] += cgk_load16(xp + kw * C + p * step) * vb;
        }
    }
    for (int p = 0; p < P; p++) {
        cgk_dw_finish(y_top + (ptrdiff_t)(ow + p) * C + c0, a[p], activation);
        cgk_dw_finish(y_bottom + (ptrdiff_t)(ow + p) * C + c0, b[p], activation);
    }
}

CGK_INLINE void cgk_dw_pair_k(const int P, const int32_t KW, const int32_t SW, const float *const *rows, int32_t t_lo, int32_t t_hi,
                              int32_t b_lo, int32_t b_hi, const cgk_window *w, const float *weight, const float *bias,
                              int activation, int32_t c_begin, int32_t c_end, float *y_top, float *y_bottom) {
    const int32_t SH = w->stride_h, OW = w->out_width;
    int32_t ow_lo, ow_hi;
    cgk_interior_columns(w, KW, SW, &ow_lo, &ow_hi);
    const int32_t blocks = c_begin + (c_end - c_begin) / CGK_DW * CGK_DW;
    // The edge columns (and below, the channels after the last group of 16), row by row: few
    // pixels, so one copy of their code serves both rows.
    const int32_t lo[2] = {t_lo, b_lo}, hi[2] = {t_hi, b_hi};
    float *const ys[2] = {y_top, y_bottom};
    for (int row = 0; row < 2; row++)
        for (int32_t i = 0; i < OW - (ow_hi - ow_lo); i++) // the interior columns are below
            cgk_dw_pixel(rows + row * SH, lo[row], hi[row], w, weight, bias, activation, cgk_edge_column(i, ow_lo, ow_hi), c_begin,
                         c_end, ys[row]);
    for (int32_t c0 = c_begin; c0 < blocks; c0 += CGK_DW) {
        const cgk_v16 init = bias != NULL ? cgk_load16(bias + c0) : (cgk_v16)0.0f;
        int32_t ow = ow_lo;
        for (; ow + P <= ow_hi; ow += P)
            cgk_dw_pair_group(P, KW, SW, rows, SH, t_lo, t_hi, b_lo, b_hi, w, weight, init, activation, ow, c0, y_top, y_bottom);
        for (; ow < ow_hi; ow++)
            cgk_dw_pair_group(1, KW, SW, rows, SH, t_lo, t_hi, b_lo, b_hi, w, weight, init, activation, ow, c0, y_top, y_bottom);
    }
    if (blocks < c_end)
        for (int row = 0; row < 2; row++)
            for (int32_t ow = ow_lo; ow < ow_hi; ow++)
                cgk_dw_pixel(rows + row * SH, lo[row], hi[row], w, weight, bias, activation, ow, blocks, c_end, ys[row]);
}

CGK_INLINE void cgk_dw_pair_p(const int P, const float *const *rows, int32_t t_lo, int32_t t_hi, int32_t b_lo,
                              int32_t b_hi, const cgk_window *w, const float *weight, const float *bias, int activation,
                              int32_t c_begin, int32_t c_end, float *y_top, float *y_bottom) {
#define CGK_DW_PAIR(KW, SW)                                                                                       \
    cgk_dw_pair_k(P, KW, SW, rows, t_lo, t_hi, b_lo, b_hi, w, weight, bias, activation, c_begin, c_end, y_top, y_bottom)
    CGK_DW_SHAPES(CGK_DW_PAIR, w->kernel_w, w->stride_w);
#undef CGK_DW_PAIR
}

// One copy of the pair kernel per variant, with as many pixels per group as that variant's
// registers hold (cgk_dw_pair_group). Not a CGK_DISPATCH body: that is compiled once per variant
// with the same code, and choosing the group width at run time inside it compiled every width
// into every variant (conv.c took minutes to compile).
#define CGK_DW_PAIR_PARAMS                                                                                \
    (const float *const *rows, int32_t oh, const cgk_window *w, const float *weight, const float *bias,       \
     int activation, int32_t c_begin, int32_t c_end, float *y_top, float *y_bottom)
// Each row's taps inside the image; in rows[] terms the bottom row's start and end no earlier than
// the top row's (cgk_dw_pair_group relies on it).
#define CGK_DW_PAIR_BODY(P)                                                                               \
    {                                                                                                     \
        const int32_t KH = w->kernel_h, SH = w->stride_h, H = w->height, ih0 = oh * SH - w->pad_top;        \
        cgk_dw_pair_p(P, rows, cgk_max(0, -ih0), cgk_min(KH, H - ih0), cgk_max(0, -(ih0 + SH)),             \
                      cgk_min(KH, H - ih0 - SH), w, weight, bias, activation, c_begin, c_end, y_top, y_bottom); \
    }
#if CGK_X86 && !defined(CGK_NO_MULTIVERSION)
CGK_TARGET_AVX512 __attribute__((noinline)) static void cgk_dw_pair_avx512 CGK_DW_PAIR_PARAMS CGK_DW_PAIR_BODY(4)
CGK_TARGET_AVX2 __attribute__((noinline)) static void cgk_dw_pair_avx2 CGK_DW_PAIR_PARAMS CGK_DW_PAIR_BODY(2)
__attribute__((noinline)) static void cgk_dw_pair_generic CGK_DW_PAIR_PARAMS CGK_DW_PAIR_BODY(1)
void cgk_depthwise_row_pair CGK_DW_PAIR_PARAMS {
    switch (cgk_isa()) {
    case CGK_ISA_AVX512: cgk_dw_pair_avx512(rows, oh, w, weight, bias, activation, c_begin, c_end, y_top, y_bottom); break;
    case CGK_ISA_AVX2: cgk_dw_pair_avx2(rows, oh, w, weight, bias, activation, c_begin, c_end, y_top, y_bottom); break;
    default: cgk_dw_pair_generic(rows, oh, w, weight, bias, activation, c_begin, c_end, y_top, y_bottom); break;
    }
}
#else
void cgk_depthwise_row_pair CGK_DW_PAIR_PARAMS CGK_DW_PAIR_BODY(1)
#endif

CGK_DISPATCH(, cgk_depthwise,
             (const float *x, const cgk_window *w, const float *weight, const float *bias, int activation, int32_t
              oh_begin, int32_t oh_end, int32_t c_begin, int32_t c_end, float *y),
             (x, w, weight, bias, activation, oh_begin, oh_end, c_begin, c_end, y)) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, SH = w->stride_h;
    const ptrdiff_t out_row = (ptrdiff_t)w->out_width * C;
    const float *rows[KH + SH];
    int32_t oh = oh_begin;
    for (; oh + 1 < oh_end; oh += 2) {
        const int32_t ih0 = oh * SH - w->pad_top;
        for (int32_t r = cgk_max(0, -ih0); r < cgk_min(KH + SH, H - ih0); r++) rows[r] = x + (ptrdiff_t)(ih0 + r) * W * C;
        float *top = y + (ptrdiff_t)oh * out_row;
        cgk_depthwise_row_pair(rows, oh, w, weight, bias, activation, c_begin, c_end, top, top + out_row);
    }
    if (oh < oh_end) {
        const int32_t ih0 = oh * SH - w->pad_top;
        const int32_t kh_lo = cgk_max(0, -ih0), kh_hi = cgk_min(KH, H - ih0);
        for (int32_t kh = kh_lo; kh < kh_hi; kh++) rows[kh] = x + (ptrdiff_t)(ih0 + kh) * W * C;
        cgk_dw_row(rows, kh_lo, kh_hi, w, weight, bias, activation, c_begin, c_end, y + (ptrdiff_t)oh * out_row);
    }
}

CGK_DISPATCH(, cgk_depthwise_row,
             (const float *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w, const float *weight,
              const float *bias, int activation, int32_t c_begin, int32_t c_end, float *y_row),
             (rows, kh_lo, kh_hi, w, weight, bias, activation, c_begin, c_end, y_row)) {
    cgk_dw_row(rows, kh_lo, kh_hi, w, weight, bias, activation, c_begin, c_end, y_row);
}

CGK_DISPATCH(, cgk_depthwise_backward,
             (const float *x, const float *dy, const cgk_window *w, const float *weight, float *dx, float *dweight),
             (x, dy, w, weight, dx, dweight)) {
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
