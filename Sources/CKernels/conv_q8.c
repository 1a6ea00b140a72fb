// The int8 depthwise convolution (cg_kernels.h, cgk_dwq8): uint8 activations, 16-bit weights,
// exact int32 sums, one float epilogue, float or uint8 out.
//
// Why this shape. A depthwise convolution does 9 or 25 multiply-adds per value it reads, so in a
// network it waits on memory: Lite0's 56x56x144 layer took about three times its hot-cache time
// in the model (docs/quantization.md). Bytes instead of floats between the 1x1 convolutions
// around it are the point; the arithmetic only has to keep up. Each 16-channel vector of bytes is
// widened to int32 lanes (vpmovzxbd), as is each vector of weights (vpmovsxwd), and multiplied
// there: the integers are exact whatever the order, so every variant, every grouping of pixels
// and rows, and the naive loops of the tests give the same sums, and the float epilogue, written
// once for all of them, the same bits.
//
// The loops are those of the float kernel (conv.c): two output rows per pass (an input vector
// loaded serves both), P pixels of 16 channels per group (4 with AVX-512's 32 registers, 2 with
// AVX2's 16, 1 for the baseline), kernel width and stride as constants for 3x3 and 5x5, stride 1
// and 2; the edge columns and the last channels (fewer than 16) pixel by pixel with their taps
// clipped. A single row is a pair whose bottom row reads nothing and is not stored.
// The epilogue's multiply and add must stay apart (every variant and the reference round twice):
// the pragma, which clang's default -ffp-contract=on honours, as conv.c's float kernel relies on.
#pragma STDC FP_CONTRACT OFF

#include "kernel_internal.h"

#include <string.h>

typedef int32_t dq_i16 __attribute__((ext_vector_type(16), aligned(4)));
typedef uint8_t dq_b16 __attribute__((ext_vector_type(16), aligned(1)));
typedef int16_t dq_h16 __attribute__((ext_vector_type(16), aligned(2)));

#define DQ 16 // channels per vector

// 16 activations minus the zero point, in int32 lanes.
CGK_INLINE dq_i16 dq_x(const uint8_t *p, dq_i16 zero) {
    dq_b16 v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, dq_i16) - zero;
}

CGK_INLINE dq_i16 dq_w(const int16_t *p) {
    dq_h16 v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, dq_i16);
}

// Rounding to nearest even as cgk_q8_quantize's portable form does (t is clamped to [-255, 255]
// first, where adding 1.5 * 2^23 rounds it and subtracting it back is exact).
#define DQ_MAGIC 12582912.0f
#define DQ_MAGIC_BITS 0x4B400000 // its bits

// The epilogue of one value (the channels after the last group of 16).
CGK_INLINE void dq_finish1(const cgk_dwq8 *p, int32_t c, int32_t acc, void *y, ptrdiff_t index) {
    float v = (float)acc;
    v = v * p->scale[c];
    if (p->bias) v = v + p->bias[c];
    v = cgk_activate(v, p->activation);
    if (p->out_inv_scales == NULL) {
        ((float *)y)[index] = v;
        return;
    }
    const float lo = (float)-p->out_zero, hi = (float)(255 - p->out_zero);
    float t = v * p->out_inv_scales[c];
    t = t > lo ? t : lo;
    t = t < hi ? t : hi;
    float r = t + DQ_MAGIC;
    r = r - DQ_MAGIC;
    ((uint8_t *)y)[index] = (uint8_t)((int32_t)r + p->out_zero);
}

// The same for 16 channels from c, stored at element `index` of y.
CGK_INLINE void dq_finish16(const cgk_dwq8 *p, int32_t c, dq_i16 acc, void *y, ptrdiff_t index) {
    cgk_v16 v = __builtin_convertvector(acc, cgk_v16);
    v = v * cgk_load16(p->scale + c);
    if (p->bias) v = v + cgk_load16(p->bias + c);
    if (p->activation == CGK_ACT_RELU || p->activation == CGK_ACT_RELU6) v = v > 0.0f ? v : 0.0f;
    if (p->activation == CGK_ACT_RELU6) v = v < 6.0f ? v : 6.0f;
    if (p->out_inv_scales == NULL) {
        cgk_store16((float *)y + index, v);
        return;
    }
    const float lo = (float)-p->out_zero, hi = (float)(255 - p->out_zero);
    cgk_v16 t = v * cgk_load16(p->out_inv_scales + c);
    t = t > lo ? t : lo;
    t = t < hi ? t : hi;
    // t + 1.5 * 2^23 holds the rounded integer in its low mantissa bits: subtracting the constant's
    // bits gives it (plus the zero point) without converting back, the same bytes as the scalar steps.
    const dq_i16 r = (dq_i16)(t + DQ_MAGIC) - (dq_i16)(DQ_MAGIC_BITS - p->out_zero);
    const dq_b16 q = __builtin_convertvector(r, dq_b16);
    memcpy((uint8_t *)y + index, &q, sizeof q);
}

// `blocks` (1..4, a constant where inlined) 16-channel sums of one pixel side by side from
// channel c, over the taps kh in [kh_lo, kh_hi), kw in [kw_lo, kw_hi): independent chains of
// multiply-adds, as the float kernel's edge pixels (conv.c, cgk_dw_pixel).
CGK_INLINE void dq_pixel_blocks(const int blocks, const uint8_t *const *rows, int32_t kh_lo, int32_t kh_hi, int32_t kw_lo,
                                int32_t kw_hi, int32_t iw0, int32_t C, int32_t KW, const cgk_dwq8 *p, int32_t c, void *y_row,
                                ptrdiff_t at) {
    const dq_i16 zero = (dq_i16)p->zero;
    dq_i16 acc[4];
    for (int b = 0; b < blocks; b++) acc[b] = (dq_i16)0;
    for (int32_t kh = kh_lo; kh < kh_hi; kh++) {
        const uint8_t *xp = rows[kh] + (ptrdiff_t)(iw0 + kw_lo) * C + c;
        const int16_t *wp = p->weight + ((ptrdiff_t)kh * KW + kw_lo) * C + c;
        for (int32_t kw = kw_lo; kw < kw_hi; kw++, xp += C, wp += C)
            for (int b = 0; b < blocks; b++) acc[b] += dq_x(xp + b * DQ, zero) * dq_w(wp + b * DQ);
    }
    for (int b = 0; b < blocks; b++) dq_finish16(p, c + b * DQ, acc[b], y_row, at + b * DQ);
}

// One output pixel, channels [c_begin, c_end), taps outside the image skipped: the edge columns
// (on a 7x7 or 14x14 image, most of them) and the pixels the groups leave.
CGK_INLINE void dq_pixel(const uint8_t *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w, const cgk_dwq8 *p,
                         int32_t ow, int32_t c_begin, int32_t c_end, void *y_row) {
    const int32_t W = w->width, C = w->channels, KW = w->kernel_w;
    const int32_t iw0 = ow * w->stride_w - w->pad_left;
    const int32_t kw_lo = cgk_max(0, -iw0), kw_hi = cgk_min(KW, W - iw0);
    const ptrdiff_t at = (ptrdiff_t)ow * C;
    int32_t c = c_begin;
    for (; c + 4 * DQ <= c_end; c += 4 * DQ) dq_pixel_blocks(4, rows, kh_lo, kh_hi, kw_lo, kw_hi, iw0, C, KW, p, c, y_row, at + c);
    for (; c + DQ <= c_end; c += DQ) dq_pixel_blocks(1, rows, kh_lo, kh_hi, kw_lo, kw_hi, iw0, C, KW, p, c, y_row, at + c);
    for (; c < c_end; c++) {
        int32_t acc = 0;
        for (int32_t kh = kh_lo; kh < kh_hi; kh++)
            for (int32_t kw = kw_lo; kw < kw_hi; kw++)
                acc += ((int32_t)rows[kh][(ptrdiff_t)(iw0 + kw) * C + c] - p->zero) * p->weight[((ptrdiff_t)kh * KW + kw) * C + c];
        dq_finish1(p, c, acc, y_row, at + c);
    }
}

// P pixels of 16 channels from (ow, c0), both rows (y_bottom NULL: the top only). rows[r] as in
// cgk_depthwise_q8_row_pair; the top row reads rows [t_lo, t_hi), the bottom one [b_lo + SH,
// b_hi + SH), which starts and ends no earlier: rows read by the top only, by both, by the bottom.
CGK_INLINE void dq_group(const int Z0, const int P, const int32_t KW, const int32_t SW, const uint8_t *const *rows, int32_t SH, int32_t t_lo,
                         int32_t t_hi, int32_t b_lo, int32_t b_hi, const cgk_window *w, const cgk_dwq8 *p, int32_t ow,
                         int32_t c0, void *y_top, void *y_bottom) {
    const int32_t C = w->channels;
    const ptrdiff_t step = (ptrdiff_t)SW * C;
    const ptrdiff_t x0 = ((ptrdiff_t)ow * SW - w->pad_left) * C + c0;
    const int16_t *weight = p->weight + c0;
    const dq_i16 zero = (dq_i16)(Z0 ? 0 : p->zero);
    const int32_t both_lo = cgk_max(t_lo, b_lo + SH), both_hi = cgk_min(t_hi, b_hi + SH);
    dq_i16 a[4], b[4];
    for (int i = 0; i < P; i++) a[i] = b[i] = (dq_i16)0;
    for (int32_t r = t_lo; r < cgk_min(t_hi, both_lo); r++) {
        const uint8_t *xp = rows[r] + x0;
        const int16_t *wt = weight + (ptrdiff_t)r * KW * C;
        for (int32_t kw = 0; kw < KW; kw++) {
            const dq_i16 vt = dq_w(wt + kw * C);
            for (int i = 0; i < P; i++) a[i] += dq_x(xp + kw * C + i * step, zero) * vt;
        }
    }
    for (int32_t r = both_lo; r < both_hi; r++) {
        const uint8_t *xp = rows[r] + x0;
        const int16_t *wt = weight + (ptrdiff_t)r * KW * C, *wb = weight + (ptrdiff_t)(r - SH) * KW * C;
        for (int32_t kw = 0; kw < KW; kw++) {
            const dq_i16 vt = dq_w(wt + kw * C), vb = dq_w(wb + kw * C);
            for (int i = 0; i < P; i++) {
                const dq_i16 xv = dq_x(xp + kw * C + i * step, zero);
                a[i] += xv * vt;
                b[i] += xv * vb;
            }
        }
    }
    for (int32_t r = cgk_max(both_hi, b_lo + SH); r < b_hi + SH; r++) {
        const uint8_t *xp = rows[r] + x0;
        const int16_t *wb = weight + (ptrdiff_t)(r - SH) * KW * C;
        for (int32_t kw = 0; kw < KW; kw++) {
            const dq_i16 vb = dq_w(wb + kw * C);
            for (int i = 0; i < P; i++) b[i] += dq_x(xp + kw * C + i * step, zero) * vb;
        }
    }
    // Unrolled, so the sums stay in registers: as a loop, clang kept them on the stack and the
    // stores and reloads took a third of the time (perf, 56x56x144 3x3).
#pragma clang loop unroll(full)
    for (int i = 0; i < P; i++) dq_finish16(p, c0, a[i], y_top, (ptrdiff_t)(ow + i) * C + c0);
    if (y_bottom) {
#pragma clang loop unroll(full)
        for (int i = 0; i < P; i++) dq_finish16(p, c0, b[i], y_bottom, (ptrdiff_t)(ow + i) * C + c0);
    }
}

CGK_INLINE void dq_pair_k(const int Z0, const int P, const int32_t KW, const int32_t SW, const uint8_t *const *rows, int32_t t_lo,
                          int32_t t_hi, int32_t b_lo, int32_t b_hi, const cgk_window *w, const cgk_dwq8 *params, int32_t c_begin,
                          int32_t c_end, void *y_top, void *y_bottom) {
    // A local copy: the outputs go through void pointers the compiler cannot tell from *params,
    // so it reloaded every field after every store. Zero points clamped to 0 .. 255, as
    // cgk_q8_quantize clamps its own.
    cgk_dwq8 local = *params;
    local.zero = cgk_max(0, cgk_min(255, local.zero));
    local.out_zero = cgk_max(0, cgk_min(255, local.out_zero));
    const cgk_dwq8 *p = &local;
    const int32_t SH = w->stride_h, OW = w->out_width;
    int32_t ow_lo, ow_hi;
    cgk_interior_columns(w, KW, SW, &ow_lo, &ow_hi);
    const int32_t blocks = c_begin + (c_end - c_begin) / DQ * DQ;
    const int32_t lo[2] = {t_lo, b_lo}, hi[2] = {t_hi, b_hi};
    void *const ys[2] = {y_top, y_bottom};
    const int row_count = y_bottom ? 2 : 1;
    for (int row = 0; row < row_count; row++)
        for (int32_t i = 0; i < OW - (ow_hi - ow_lo); i++) // the interior columns are below
            dq_pixel(rows + row * SH, lo[row], hi[row], w, p, cgk_edge_column(i, ow_lo, ow_hi), c_begin, c_end, ys[row]);
    for (int32_t c0 = c_begin; c0 < blocks; c0 += DQ) {
        int32_t ow = ow_lo;
        for (; ow + P <= ow_hi; ow += P) dq_group(Z0, P, KW, SW, rows, SH, t_lo, t_hi, b_lo, b_hi, w, p, ow, c0, y_top, y_bottom);
        for (; ow < ow_hi; ow++) dq_group(Z0, 1, KW, SW, rows, SH, t_lo, t_hi, b_lo, b_hi, w, p, ow, c0, y_top, y_bottom);
    }
    if (blocks < c_end)
        for (int row = 0; row < row_count; row++)
            for (int32_t ow = ow_lo; ow < ow_hi; ow++) dq_pixel(rows + row * SH, lo[row], hi[row], w, p, ow, blocks, c_end, ys[row]);
}

// Kernel width and stride as constants where EfficientNet's are (conv.c, CGK_DW_SHAPES).
#define DQ_PAIR_PARAMS                                                                                              \
    (const uint8_t *const *rows, int32_t t_lo, int32_t t_hi, int32_t b_lo, int32_t b_hi, const cgk_window *w,        \
     const cgk_dwq8 *p, int32_t c_begin, int32_t c_end, void *y_top, void *y_bottom)
#define DQ_PAIR_SHAPES(Z0, P)                                                                                       \
    if (KW_ == 3 && SW_ == 1) dq_pair_k(Z0, P, 3, 1, rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom); \
    else if (KW_ == 3 && SW_ == 2) dq_pair_k(Z0, P, 3, 2, rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom); \
    else if (KW_ == 5 && SW_ == 1) dq_pair_k(Z0, P, 5, 1, rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom); \
    else if (KW_ == 5 && SW_ == 2) dq_pair_k(Z0, P, 5, 2, rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom); \
    else dq_pair_k(Z0, P, KW_, SW_, rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom)
// A zero point of 0 (the input of every depthwise convolution after a ReLU) has a copy of its own:
// bytes zero-extended to int32 times weights sign-extended from int16 are what vpmaddwd
// multiplies, which the compiler then uses instead of vpmulld and the subtraction.
#define DQ_PAIR_BODY(P)                                                                                             \
    {                                                                                                               \
        const int32_t KW_ = w->kernel_w, SW_ = w->stride_w;                                                         \
        if (p->zero == 0) { DQ_PAIR_SHAPES(1, P); }                                                                 \
        else { DQ_PAIR_SHAPES(0, P); }                                                                              \
    }
// One copy per variant with that variant's group width (as conv.c's pair kernel, for the same
// reason: a width chosen at run time inside a dispatched body compiles every width everywhere).
// With AVX-512 VNNI (Ice Lake, Zen 4) the compiler fuses each vpmaddwd and the addition after it
// into one vpdpwssd: a multiply-add per 16 channels, as the float kernel's.
#if CGK_X86 && !defined(CGK_NO_MULTIVERSION)
#define DQ_TARGET_VNNI __attribute__((target("arch=x86-64-v4,avx512vnni,tune=znver4"), min_vector_width(512)))
DQ_TARGET_VNNI __attribute__((noinline)) static void dq_pair_vnni DQ_PAIR_PARAMS DQ_PAIR_BODY(4)
CGK_TARGET_AVX512 __attribute__((noinline)) static void dq_pair_avx512 DQ_PAIR_PARAMS DQ_PAIR_BODY(4)
CGK_TARGET_AVX2 __attribute__((noinline)) static void dq_pair_avx2 DQ_PAIR_PARAMS DQ_PAIR_BODY(2)
__attribute__((noinline)) static void dq_pair_generic DQ_PAIR_PARAMS DQ_PAIR_BODY(1)
static _Atomic int dq_vnni = -1;
static void dq_pair DQ_PAIR_PARAMS {
    switch (cgk_isa()) {
    case CGK_ISA_AVX512:
        if (dq_vnni < 0) {
            __builtin_cpu_init();
            dq_vnni = __builtin_cpu_supports("avx512vnni") ? 1 : 0;
        }
        if (dq_vnni) dq_pair_vnni(rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom);
        else dq_pair_avx512(rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom);
        break;
    case CGK_ISA_AVX2: dq_pair_avx2(rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom); break;
    default: dq_pair_generic(rows, t_lo, t_hi, b_lo, b_hi, w, p, c_begin, c_end, y_top, y_bottom); break;
    }
}
#else
static void dq_pair DQ_PAIR_PARAMS DQ_PAIR_BODY(1)
#endif

void cgk_depthwise_q8_row_pair(const uint8_t *const *rows, int32_t oh, const cgk_window *w, const cgk_dwq8 *p, int32_t c_begin,
                               int32_t c_end, void *y_top, void *y_bottom) {
    const int32_t KH = w->kernel_h, SH = w->stride_h, H = w->height, ih0 = oh * SH - w->pad_top;
    dq_pair(rows, cgk_max(0, -ih0), cgk_min(KH, H - ih0), cgk_max(0, -(ih0 + SH)), cgk_min(KH, H - ih0 - SH), w, p, c_begin,
            c_end, y_top, y_bottom);
}

void cgk_depthwise_q8_row(const uint8_t *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w, const cgk_dwq8 *p,
                          int32_t c_begin, int32_t c_end, void *y_row) {
    // The bottom row's range, [kh_hi, kh_hi) in rows[] terms, is empty and comes after the top's.
    const int32_t b = kh_hi - w->stride_h;
    dq_pair(rows, kh_lo, kh_hi, b, b, w, p, c_begin, c_end, y_row, NULL);
}

void cgk_depthwise_q8(const uint8_t *x, const cgk_window *w, const cgk_dwq8 *p, int32_t oh_begin, int32_t oh_end,
                      int32_t c_begin, int32_t c_end, void *y) {
    const int32_t H = w->height, W = w->width, C = w->channels, KH = w->kernel_h, SH = w->stride_h;
    const ptrdiff_t out_row = (ptrdiff_t)w->out_width * C * (p->out_inv_scales ? 1 : (ptrdiff_t)sizeof(float));
    const uint8_t *rows[KH + SH];
    int32_t oh = oh_begin;
    for (; oh + 1 < oh_end; oh += 2) {
        const int32_t ih0 = oh * SH - w->pad_top;
        for (int32_t r = cgk_max(0, -ih0); r < cgk_min(KH + SH, H - ih0); r++) rows[r] = x + (ptrdiff_t)(ih0 + r) * W * C;
        uint8_t *top = (uint8_t *)y + (ptrdiff_t)oh * out_row;
        cgk_depthwise_q8_row_pair(rows, oh, w, p, c_begin, c_end, top, top + out_row);
    }
    if (oh < oh_end) {
        const int32_t ih0 = oh * SH - w->pad_top;
        const int32_t kh_lo = cgk_max(0, -ih0), kh_hi = cgk_min(KH, H - ih0);
        for (int32_t kh = kh_lo; kh < kh_hi; kh++) rows[kh] = x + (ptrdiff_t)(ih0 + kh) * W * C;
        cgk_depthwise_q8_row(rows, kh_lo, kh_hi, w, p, c_begin, c_end, (uint8_t *)y + (ptrdiff_t)oh * out_row);
    }
}
