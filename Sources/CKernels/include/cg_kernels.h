// CoverGenre's numeric inner loops: convolutions' building blocks, pooling, activations, the
// optimizers' updates, image resampling, the packed-weight GEMM that inference's 1x1, im2col and
// linear layers run (training's GEMMs, and inference's on CPUs without AVX2, go to OpenBLAS), and
// the primitives under them: the worker pool, XXH64 and f16 conversion.
//
// Layout: NHWC, float32, rows contiguous. Functions take one image (or a range of its rows) so the
// Swift side decides how work is split across threads; none of them allocates (except the image
// resampler, documented below), locks, or keeps state. Each is compiled for AVX-512 (x86-64-v4),
// AVX2+FMA (x86-64-v3) and baseline x86-64, since Swift code itself targets the baseline CPU; one
// variant runs in a process (see cgk_isa).
#ifndef CG_KERNELS_H
#define CG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CGK_ACT_NONE = 0,
    CGK_ACT_RELU = 1,
    CGK_ACT_RELU6 = 2,
} cgk_activation;

// A sliding window over one NHWC image: convolution or pooling geometry.
typedef struct {
    int32_t height, width, channels;   // input
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;         // bottom/right padding follows from the output size
    int32_t out_height, out_width;
} cgk_window;

// ---- instruction-set variants -----------------------------------------------------------------

typedef enum {
    CGK_ISA_GENERIC = 0, // baseline x86-64 (SSE2), or any other CPU
    CGK_ISA_AVX2 = 1,    // x86-64-v3: AVX2, FMA, F16C
    CGK_ISA_AVX512 = 2,  // x86-64-v4: AVX-512 F, BW, CD, DQ, VL
} cgk_isa_level;

// The variant every kernel of this process runs: the best this CPU executes, or a lower one named
// by the environment variable COVERGENRE_ISA ("generic", "avx2", "avx512"), read once, on first
// use. A request the CPU cannot execute falls back to the best variant it can.
int cgk_isa(void);
// The best variant this CPU executes.
int cgk_isa_best(void);
// The variant COVERGENRE_ISA names, or -1 when it is unset or names none.
int cgk_isa_requested(void);
// "generic", "avx2", "avx512" (static strings).
const char *cgk_isa_name(int isa);

// ---- element-wise ---------------------------------------------------------------------------

// y[r, c] = act(y[r, c] + bias[c]) for a rows x cols block with row stride ldy; bias may be NULL.
void cgk_bias_activation(float *y, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ldy, const float *bias, int activation);

// y = act(a + b), n elements; y may alias a or b.
void cgk_add(const float *a, const float *b, ptrdiff_t n, int activation, float *y);

// y[r, c] = act(x[r, c] * scale[c] + shift[c]): batch norm at inference; y may alias x.
void cgk_scale_shift(const float *x, ptrdiff_t rows, ptrdiff_t cols, const float *scale, const float *shift,
                     int activation, float *y);

// dx = dy where the activation's output y let the gradient through (relu: y > 0; relu6: 0 < y < 6).
// dx may alias dy.
void cgk_activation_backward(const float *y, const float *dy, ptrdiff_t n, int activation, float *dx);

// out[c] += sum over rows of x[r, c]: bias gradients and channel sums.
void cgk_column_sum(const float *x, ptrdiff_t rows, ptrdiff_t cols, float *out);

// y = x * a (in place allowed); dropout masks and scaling.
void cgk_multiply(const float *x, const float *mask, ptrdiff_t n, float *y);

// One Adam/AdamW step over n parameters: grad = g * clip + l2 * w; moments updated; w -= lr *
// (m / bias1) / (sqrt(v / bias2) + epsilon) + lr * decoupled * w. bias1/2 = 1 - beta^step.
void cgk_adam_update(float *w, const float *g, float *m, float *v, ptrdiff_t n, float lr, float beta1, float beta2,
                     float bias1, float bias2, float epsilon, float l2, float decoupled, float clip);

// One SGD step with momentum: velocity = momentum * velocity + g * clip + l2 * w; w -= lr * velocity.
void cgk_sgd_update(float *w, const float *g, float *velocity, ptrdiff_t n, float lr, float momentum, float l2, float clip);

// ---- packed-weight GEMM (inference) -----------------------------------------------------------

// 1 when the variant in use has a packed-GEMM microkernel (AVX2 and AVX-512); otherwise callers
// use OpenBLAS.
int cgk_gemm_packed_available(void);

// Floats needed to pack a k x n row-major matrix into 16-column panels.
size_t cgk_pack_b_floats(int32_t k, int32_t n);
void cgk_pack_b(const float *b, ptrdiff_t ldb, int32_t k, int32_t n, float *packed);
// The same from IEEE half-precision values (an f16 model file), converting while packing.
void cgk_pack_b_f16(const uint16_t *b, ptrdiff_t ldb, int32_t k, int32_t n, float *packed);

// c[m x n] = act(a[m x k] * B + bias) with B packed by cgk_pack_b, for the panels (16-column
// groups) [panel_begin, panel_end): threads split the panels or the rows.
void cgk_gemm_packed(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, const float *packed, float *c,
                     ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end);

// ---- int8 GEMM (quantized inference) ----------------------------------------------------------

// C = act(scale * (quantize(A) * W + offset) + bias) with int8 weights packed once at load and float
// activations quantized to uint8 on the fly: a quarter of the packed floats' memory, and four
// products per instruction lane (vpdpbusd with AVX-512 VNNI; vpmaddubsw + vpmaddwd with AVX2).
// The integer part is exact and the float part specified step by step, so every variant (see
// cgk_q8_kernel) returns the same bits:
//   quantize:  t = a * inv; t = t > lo ? t : lo; t = t < hi ? t : hi (lo = -zero,
//              hi = 255 - zero; NaN becomes lo); q = rint(t) + zero, ties to even
//   multiply:  acc[r][c] = sum over k of q[r][k] * W[k][c], in int32
//   epilogue:  v = (float)(acc + offset[c]); v = v * scale[c]; v = v + bias[c] (when bias is not
//              NULL); then the activation, as cgk_activate: a multiply and an add, never fused
// offset[c] = -zero * (sum over k of W[k][c]) takes out the zero point; scale[c] is the activations'
// scale times column c's weight scale, inv_scale 1 / the activations' scale, zero their zero point
// (0 .. 255; clamped to it). inv is inv_scale, or inv_scales[k] for the value in column k when
// inv_scales is not NULL: per input channel, for models whose channels were balanced against the
// weights (docs/quantization.md). Weights are in [-127, 127]. vpmaddubsw adds two u8 x s8 products
// into int16 with saturation: 2 * 255 * 63 = 32130 never saturates, 2 * 255 * 127 can, so the AVX2
// kernel runs a "wide" matrix (a weight outside [-63, 63]) with each activation byte split into
// its high 7 bits and its low bit, exact at twice the multiplies; VNNI and the portable kernel
// never saturate. k from 1 to 65536 (the int32 sums cannot overflow).

// Bytes needed to pack a k x n int8 matrix: k rounded up to a multiple of 4, n to 16-column panels.
size_t cgk_q8_pack_bytes(int32_t k, int32_t n);
// Packs W (k x n, row stride ldb) into panels of 16 columns, panel p at p * kq * 16 bytes (kq = k
// rounded up to 4). Within a panel, groups of 4 consecutive k values (zero past k), 64 bytes each:
// column j's 4 values at bytes 4j .. 4j + 3, zero past n. One group of one panel is the zmm
// vpdpbusd reads (int32 lane j = column j), or two ymm (columns 0-7, 8-15) for AVX2. -128 is
// clamped to -127 (compute offset from the clamped values). Returns 1 when the matrix is wide (a
// value outside [-63, 63]), else 0: pass it to cgk_gemm_q8.
int cgk_q8_pack(const int8_t *b, ptrdiff_t ldb, int32_t k, int32_t n, int8_t *packed);
// Quantizes n floats as above: what the GEMM does to A, exposed for tests and for callers that
// quantize at a float boundary.
// inv_scales: NULL, or one multiplier per value.
void cgk_q8_quantize(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales, int32_t zero, uint8_t *q);
// c[m x n] (row stride ldc) for A = a[m x k] (row stride lda) and W packed by cgk_q8_pack, for
// the panels (16-column groups) [panel_begin, panel_end): threads split the panels or the rows,
// as cgk_gemm_packed. offset and scale have n entries, bias n or is NULL; activation is a
// cgk_activation. No allocation; about 27 KB of stack (66 KB in an unoptimized build). For k over
// 2048, C holds int32 partial sums between passes over k (C is output only either way).
// wide: what cgk_q8_pack returned.
void cgk_gemm_q8(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, const float *inv_scales,
                 int32_t zero, const int8_t *packed, int wide, const int32_t *offset, const float *scale, float *c, ptrdiff_t ldc,
                 const float *bias, int activation, int32_t panel_begin, int32_t panel_end);
// Activations already in uint8 on either side of cgk_gemm_q8, so a chain of int8 layers never
// widens them to float between layers (docs/quantization.md):
// - a: not NULL: A is given quantized (m x k bytes, row stride lda; the float a is not read), in
//   this matrix's quantization, as cgk_q8_quantize would have made it;
// - c: not NULL: C is written as bytes (row stride ldc; the float c is not written): each finished
//   value v (after the activation) quantized as cgk_q8_quantize does, v * out_inv_scales[column],
//   plus out_zero. Needs k <= 2048 (one pass over k) and out_inv_scales; else nothing is written.
// The bits are those of the float output quantized by cgk_q8_quantize afterwards.
typedef struct {
    const uint8_t *a;
    uint8_t *c;
    const float *out_inv_scales;
    int32_t out_zero;
} cgk_q8_io;
// cgk_gemm_q8 with io (NULL: cgk_gemm_q8 itself).
void cgk_gemm_q8_io(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, const float *inv_scales,
                    int32_t zero, const int8_t *packed, int wide, const int32_t *offset, const float *scale, float *c, ptrdiff_t ldc,
                    const float *bias, int activation, int32_t panel_begin, int32_t panel_end, const cgk_q8_io *io);
// Which int8 kernel cgk_gemm_q8 runs in this process: "avx512-vnni" (cgk_isa() is AVX-512 and the
// CPU has AVX-512 VNNI), "avx2" (AVX2, or AVX-512 without VNNI) or "generic" (static strings).
const char *cgk_q8_kernel(void);

// ---- convolution ----------------------------------------------------------------------------

// Writes im2col rows [row_begin, row_end) of one image: row r is output pixel (r / out_width,
// r % out_width), columns are (kh, kw, c) for channels [channel_begin, channel_begin + channel_count),
// zero outside the image. col has row stride ldcol >= kernel_h * kernel_w * channel_count.
void cgk_im2col(const float *x, const cgk_window *w, int32_t channel_begin, int32_t channel_count,
                ptrdiff_t row_begin, ptrdiff_t row_end, float *col, ptrdiff_t ldcol);

// One output row's strip (the strip form of im2col, for stems): strip[xp][kh][c] for the
// (out_width - 1) * stride_w + kernel_w padded input columns the row reads, zero outside the
// image. Output pixel ow's GEMM row is the kernel_w * kernel_h * channels floats at
// ow * stride_w * kernel_h * channels, columns in (kw, kh, c) order.
void cgk_im2col_strip(const float *x, const cgk_window *w, int32_t oh, float *strip);

// The adjoint of cgk_im2col: adds each column entry back onto dx (which the caller zeroes first).
// Rows overlap in dx, so one image's col2im must run on one thread.
void cgk_col2im(const float *col, ptrdiff_t ldcol, const cgk_window *w, int32_t channel_begin, int32_t channel_count,
                ptrdiff_t row_begin, ptrdiff_t row_end, float *dx);

// Depthwise convolution (one filter per channel, weight [kh][kw][c]) with fused bias and
// activation, for output rows [oh_begin, oh_end) and channels [c_begin, c_end) of one image.
void cgk_depthwise(const float *x, const cgk_window *w, const float *weight, const float *bias, int activation,
                   int32_t oh_begin, int32_t oh_end, int32_t c_begin, int32_t c_end, float *y);
// One output row of the depthwise convolution from the input rows it reads: rows[kh] points to
// input row oh * stride_h - pad_top + kh (width x channels floats) for kh in [kh_lo, kh_hi), the
// rows inside the image; y_row to the output row. Lets a caller keep only a few input rows.
void cgk_depthwise_row(const float *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w,
                       const float *weight, const float *bias, int activation, int32_t c_begin, int32_t c_end,
                       float *y_row);
// Output rows oh and oh + 1 (oh + 1 < out_height) from the input rows they read, as cgk_depthwise
// computes them (the same bits as two cgk_depthwise_row calls): rows[r] points to input row
// oh * stride_h - pad_top + r for every r in [0, kernel_h + stride_h) where that row is inside the
// image (the others are padding and not read).
void cgk_depthwise_row_pair(const float *const *rows, int32_t oh, const cgk_window *w, const float *weight,
                            const float *bias, int activation, int32_t c_begin, int32_t c_end, float *y_top,
                            float *y_bottom);

// ---- int8 depthwise convolution ----
//
// The depthwise convolution of uint8 activations, x ~ (q - zero) * in_scale[c], by 16-bit
// weights, w ~ weight[kh][kw][c] * w_scale[c] (symmetric per channel, in [-32767, 32767]):
//   acc = sum over the taps inside the image of (q - zero) * weight, in int32 (exact: at most 257
//         taps, |q - zero| <= 255);
//   v = (float)acc; v = v * scale[c]; v = v + bias[c] (when bias is not NULL); the activation, as
//         cgk_activate (scale[c] = in_scale[c] * w_scale[c]; a multiply and an add, never fused);
//   then stored as a float, or, when out_inv_scales is not NULL, as the byte cgk_q8_quantize makes
//         of v with out_inv_scales[c] and out_zero (what the next int8 layer reads, cgk_q8_io).
// Padding contributes nothing (a zero activation), as in cgk_depthwise. 8-bit weights measured too
// coarse for 9 or 25 taps (docs/quantization.md); 16-bit ones cost nothing the accuracy shows and
// the same instructions: every variant widens both to int32 lanes and multiplies there.
typedef struct {
    const int16_t *weight;        // [kernel_h][kernel_w][channels]
    const float *scale;           // [channels]
    const float *bias;            // [channels] or NULL
    int32_t zero;                 // the input's zero point, 0 .. 255 (clamped to it)
    int32_t activation;           // a cgk_activation
    const float *out_inv_scales;  // [channels]: uint8 output; NULL: float output
    int32_t out_zero;             // 0 .. 255 (clamped to it)
} cgk_dwq8;
// Output rows [oh_begin, oh_end), channels [c_begin, c_end) of one image; y is float or uint8
// (out_inv_scales), out_height x out_width x channels of them.
void cgk_depthwise_q8(const uint8_t *x, const cgk_window *w, const cgk_dwq8 *p, int32_t oh_begin, int32_t oh_end,
                      int32_t c_begin, int32_t c_end, void *y);
// One output row from the input rows it reads, as cgk_depthwise_row: rows[kh] for kh in
// [kh_lo, kh_hi), each width x channels bytes.
void cgk_depthwise_q8_row(const uint8_t *const *rows, int32_t kh_lo, int32_t kh_hi, const cgk_window *w, const cgk_dwq8 *p,
                          int32_t c_begin, int32_t c_end, void *y_row);
// Output rows oh and oh + 1 (oh + 1 < out_height), as cgk_depthwise_row_pair: rows[r] is input
// row oh * stride_h - pad_top + r for each r in [0, kernel_h + stride_h) inside the image.
void cgk_depthwise_q8_row_pair(const uint8_t *const *rows, int32_t oh, const cgk_window *w, const cgk_dwq8 *p,
                               int32_t c_begin, int32_t c_end, void *y_top, void *y_bottom);

// Depthwise backward for one image: dx += conv^T(dy) (dx zeroed by the caller), dweight += x * dy.
void cgk_depthwise_backward(const float *x, const float *dy, const cgk_window *w, const float *weight,
                            float *dx, float *dweight);

// Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions. Weights [3][3][cin][cout] become
// U[36][cin][cout] once; per block of output tiles (4x4 pixels each, row-major over the image,
// tiles_w per row), the input becomes V[36][block][cin] (plane = block * cin), the caller multiplies
// each of the 36 planes by U, and the output transform writes act(y + bias) in NHWC.
void cgk_winograd_weights(const float *weight, int32_t cin, int32_t cout, float *u);
void cgk_winograd_input(const float *x, const cgk_window *w, int32_t tiles_w, int32_t t_begin, int32_t t_end, float *v,
                        ptrdiff_t plane);
void cgk_winograd_output(const float *m, ptrdiff_t plane, int32_t cout, int32_t out_h, int32_t out_w, int32_t tiles_w,
                         int32_t t_begin, int32_t t_end, const float *bias, int activation, float *y);

// ---- pooling --------------------------------------------------------------------------------

// Max pooling for output rows [oh_begin, oh_end) of one image; padding never wins the max.
// When argmax is not NULL it receives, per output element, the input element index (pixel * C + c).
void cgk_maxpool(const float *x, const cgk_window *w, int32_t oh_begin, int32_t oh_end, float *y, int32_t *argmax);

// dx[argmax[i]] += dy[i] for one image's n output elements.
void cgk_maxpool_backward(const float *dy, const int32_t *argmax, ptrdiff_t n, float *dx);

// y[c] = mean over pixels of x[p, c] (one image).
void cgk_global_avgpool(const float *x, ptrdiff_t pixels, int32_t channels, float *y);

// Per-channel mean and standard deviation over one image's pixels (population statistics).
void cgk_channel_mean_std(const float *x, ptrdiff_t pixels, int32_t channels, float *mean, float *std);

// Adaptive average pooling (PyTorch's bins: start = floor(i*in/out), end = ceil((i+1)*in/out)).
void cgk_adaptive_avgpool(const float *x, int32_t height, int32_t width, int32_t channels, int32_t out_height,
                          int32_t out_width, float *y);

// ---- batch normalization (training) --------------------------------------------------------

// Per-channel sum and sum of squares over rows, accumulated in double.
void cgk_channel_moments(const float *x, ptrdiff_t rows, int32_t channels, double *sum, double *sum_squares);

// Per-channel sum(dy) and sum(dy * (x - mean) * inv_std), accumulated in double.
void cgk_batchnorm_backward_reduce(const float *dy, const float *x, ptrdiff_t rows, int32_t channels,
                                   const float *mean, const float *inv_std, double *sum_dy, double *sum_dy_xhat);

// dx = gamma * inv_std * (dy - sum_dy / m - xhat * sum_dy_xhat / m), m = count.
void cgk_batchnorm_backward_apply(const float *dy, const float *x, ptrdiff_t rows, int32_t channels,
                                  const float *mean, const float *inv_std, const float *gamma,
                                  const float *mean_dy, const float *mean_dy_xhat, float *dx);

// ---- images ---------------------------------------------------------------------------------

// Resamples the source rectangle (x0, y0, region_w, region_h) of an RGB888 image to out_w x out_h
// float RGB in [0, 255] (NHWC, one image), with a triangle filter widened by the scale factor when
// shrinking (antialiasing, as PIL's bilinear). Pixels outside the source are clamped to its edge.
// mirror != 0 flips horizontally. Allocates and frees its own scratch; returns 0 on success,
// -1 on bad arguments, -2 when out of memory.
int cgk_resample_rgb(const uint8_t *src, int32_t src_w, int32_t src_h, ptrdiff_t src_stride, double x0, double y0,
                     double region_w, double region_h, int32_t out_w, int32_t out_h, int mirror, float *out);

// y[p, ch] = x[p, ch] * scale[ch] + shift[ch] for 3-channel pixels; normalizes in place.
void cgk_normalize_rgb(float *x, ptrdiff_t pixels, const float scale[3], const float shift[3]);

// ---- threads ------------------------------------------------------------------------------------

// The scheduler of one model: `workers` threads shared by every call (threadpool.c says how).
typedef struct cgk_pool cgk_pool;
typedef void (*cgk_task)(void *context, int32_t part);

cgk_pool *cgk_pool_create(int32_t workers);
int32_t cgk_pool_workers(const cgk_pool *pool);
// Brackets one call into the model (which may run many regions): the number of calls in progress
// tells a region how many workers it may take and an idle worker whether to spin or sleep.
void cgk_pool_enter(cgk_pool *pool);
void cgk_pool_leave(cgk_pool *pool);
// Runs task(context, i) exactly once for every i in [0, parts), on the calling thread and on at
// most max_threads - 1 workers that are idle now; returns when every part has finished. Parts are
// claimed in order by whichever thread is free, so `part` (not the thread) names the work and its
// scratch. Any number of threads may call it at once; pool may be NULL (all parts on the caller).
void cgk_pool_run(cgk_pool *pool, int32_t parts, int32_t max_threads, cgk_task task, void *context);
void cgk_pool_destroy(cgk_pool *pool);

// ---- storage --------------------------------------------------------------------------------

// XXH64 of a byte range (the model file's checksum).
uint64_t cgk_xxh64(const void *data, size_t length, uint64_t seed);

// IEEE half <-> float, round-to-nearest-even.
void cgk_half_to_float(const uint16_t *src, float *dst, size_t n);
void cgk_float_to_half(const float *src, uint16_t *dst, size_t n);

#ifdef __cplusplus
}
#endif

#endif
