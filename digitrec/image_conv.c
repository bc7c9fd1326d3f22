/* The convolution that reads a one-channel image (a network's first layer), forward and
   backward, for training.

   Why this exists: oneDNN, behind PyTorch's CPU convolution, is built for many input channels.
   With one (a grey digit) it pads the channel dimension out to its vector blocks, and TinyVGG's
   first convolution (1 -> 10 channels, 3 x 3, 128 digits) took about a third of a training
   step's convolution time for a tenth of its arithmetic. Here one output row, all its output
   channels side by side (channels-last: w_out x channels contiguous values), is a sum of k x k
   products of contiguous runs: for each tap, the input row expanded so each pixel repeats once
   per output channel, times that tap's weights repeated once per pixel. Every loop is over
   contiguous memory, so the compiler (-O3 -march=native) makes them vector instructions.

   Arithmetic: float32 throughout. bfloat16 inputs and weights (the forward pass under autocast)
   are widened exactly, each output is bias + the taps in row order, rounded once to the
   output's type (round to nearest even, as PyTorch rounds). oneDNN adds the same products in
   another order, so results agree to rounding, not bit for bit; tests/test_image_conv.py
   checks both directions against PyTorch's convolution.

   With relu set, the forward pass writes relu(conv(x)) (a negative sum becomes +0; -0 and NaN
   stay, as PyTorch's relu), and the backward pass, given that output, passes the gradient only
   where it is not <= 0, as the ReLU's backward (threshold_backward) would.

   Layout: x is (n, h, w) (a (n, 1, h, w) tensor, the same memory in either layout); weight is
   (channels, k, k); bias is (channels,) or NULL; y and grad are (n, h_out, w_out, channels), a
   channels-last (n, channels, h_out, w_out) tensor, with h_out = h + 2 pad - k + 1 and w_out
   likewise (stride 1, zero padding). The backward pass writes grad_weight (channels, k, k) and,
   unless NULL, grad_bias (channels,); its y is NULL unless a ReLU came after. Each returns 0, or
   -1 where it could not allocate its buffers. Two element types: bfloat16 and float32. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One vector register's width on the processor compiled for (-march=native), as in pooling.c. */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16 /* SSE2, Arm's NEON */
#endif

typedef float vfloat __attribute__((vector_size(VECTOR_BYTES)));
typedef uint32_t vbits __attribute__((vector_size(VECTOR_BYTES)));
typedef uint16_t vhalf __attribute__((vector_size(VECTOR_BYTES / 2)));
enum { LANES = VECTOR_BYTES / sizeof(float) };

static inline vfloat load(const float *p) { vfloat v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vfloat v) { memcpy(p, &v, sizeof v); }
static inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

typedef uint16_t bfloat16;

static inline float widen_bfloat16(bfloat16 b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even, a NaN to the quiet NaN 0x7fc0: what c10::BFloat16 does. */
static inline bfloat16 narrow_bfloat16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (bfloat16)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

static inline float widen_float32(float f) { return f; }
static inline float narrow_float32(float f) { return f; }

/* A row of float sums to the output's type, relu'd if asked; many values per instruction. */
static void write_float32(float *out, const float *sum, int64_t count, int relu) {
    int64_t q = 0;
    for (; q + LANES <= count; q += LANES) {
        vfloat v = load(sum + q);
        if (relu) v = (vfloat)((vbits)v & ~(vbits)(v < 0.0f));
        store(out + q, v);
    }
    for (; q < count; q++) out[q] = relu && sum[q] < 0.0f ? 0.0f : sum[q];
}

static void write_bfloat16(bfloat16 *out, const float *sum, int64_t count, int relu) {
    int64_t q = 0;
    for (; q + LANES <= count; q += LANES) {
        vfloat v = load(sum + q);
        if (relu) v = (vfloat)((vbits)v & ~(vbits)(v < 0.0f));
        vbits bits = (vbits)v;
        vbits rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
        vbits nan = (vbits)((bits & 0x7fffffffu) > 0x7f800000u);
        rounded = (nan & 0x7fc0u) | (~nan & rounded);
        vhalf narrow = __builtin_convertvector(rounded, vhalf);
        memcpy(out + q, &narrow, sizeof narrow);
    }
    for (; q < count; q++) out[q] = narrow_bfloat16(relu && sum[q] < 0.0f ? 0.0f : sum[q]);
}
/* A row of the output's gradient as floats; with the ReLU's output y, 0 where y <= 0 (as
   threshold_backward: a NaN output passes its gradient). */
static void read_float32(float *g, const float *grad, const float *y, int64_t count) {
    int64_t q = 0;
    for (; q + LANES <= count; q += LANES) {
        vfloat v = load(grad + q);
        if (y) v = (vfloat)((vbits)v & ~(vbits)(load(y + q) <= 0.0f));
        store(g + q, v);
    }
    for (; q < count; q++) g[q] = y && y[q] <= 0.0f ? 0.0f : grad[q];
}

static inline vfloat widen_vector(const bfloat16 *p) {
    vhalf half;
    memcpy(&half, p, sizeof half);
    return (vfloat)(__builtin_convertvector(half, vbits) << 16);
}

static void read_bfloat16(float *g, const bfloat16 *grad, const bfloat16 *y, int64_t count) {
    int64_t q = 0;
    for (; q + LANES <= count; q += LANES) {
        vfloat v = widen_vector(grad + q);
        if (y) v = (vfloat)((vbits)v & ~(vbits)(widen_vector(y + q) <= 0.0f));
        store(g + q, v);
    }
    for (; q < count; q++) g[q] = y && widen_bfloat16(y[q]) <= 0.0f ? 0.0f : widen_bfloat16(grad[q]);
}

/* The padded image (h + 2 pad rows of w + 2 pad pixels), each pixel repeated `channels` times,
   so that the tap (i, j) of output row r reads row r + i from position j * channels on. The
   buffer starts zero (the padding) and has a row and a block more: the last block of a row may
   read past its end. A pixel is written as whole vectors (one store for up to LANES channels, not
   one per channel: a third of the forward pass's time before); the part of the last vector past
   a row's pixels is zeroed again, as it may cover padding. */
#define EXPAND(SUFFIX, T)                                                                          \
    static void expand_##SUFFIX(const T *image, float *expanded, int64_t h, int64_t w,          \
                                int64_t channels, int64_t pad) {                                 \
        const int64_t row = (w + 2 * pad) * channels;                                             \
        for (int64_t r = 0; r < h; r++) {                                                          \
            float *out = expanded + (r + pad) * row + pad * channels;                             \
            for (int64_t c = 0; c < w; c++) {                                                      \
                const vfloat v = (vfloat){0} + widen_##SUFFIX(image[r * w + c]);                 \
                for (int64_t o = 0; o < channels; o += LANES) store(out + c * channels + o, v);  \
            }                                                                                      \
            memset(out + w * channels, 0, sizeof(float) * LANES);                                 \
        }                                                                                          \
    }

/* The sizes every kernel derives from (n, h, w, channels, k, pad). */
#define SHAPE                                                                                      \
    const int64_t h_out = h + 2 * pad - k + 1, w_out = w + 2 * pad - k + 1;                       \
    const int64_t span = w_out * channels, padded_span = round_up(span, LANES);                   \
    const int64_t row = (w + 2 * pad) * channels;                                                  \
    const int64_t h_rounded = round_up(h_out, ROWS);                                               \
    const size_t expanded_size = (size_t)((h_rounded + k) * row + LANES);

/* The loops below run over one vector of output positions at a time, all rows of an image
   inside: a 3 x 3 kernel's nine tap vectors (forward) or nine sums (backward) then stay in
   registers, and each product costs one load, not two loads and a store. Other kernel sizes
   read and write them in memory. */
enum { HELD = 9 };
/* The forward pass sums ROWS output rows at once: one row's nine products form a chain, each
   waiting on the last (an FMA's latency); four rows are four chains side by side. The expanded
   image has rows enough below for the rounded-up count. */
enum { ROWS = 4 };
/* Loops of a few, known steps written out, so the 3 x 3 taps' branches fold away. */
#define UNROLLED _Pragma("GCC unroll 8")

#define CONV_KERNELS(SUFFIX, T)                                                                    \
    EXPAND(SUFFIX, T)                                                                              \
                                                                                                   \
    static inline __attribute__((always_inline)) int                                              \
    forward_##SUFFIX(const T *x, const T *weight, const T *bias, T *y, int64_t n, int64_t h,       \
                     int64_t w, int64_t channels, int64_t k, int64_t pad, int relu) {              \
        SHAPE                                                                                      \
        const int held = k * k <= HELD;                                                            \
        float *taps = calloc((size_t)(k * k * padded_span), sizeof(float));                       \
        float *start = calloc((size_t)padded_span, sizeof(float));                                \
        float *sums = calloc((size_t)(h_rounded * padded_span), sizeof(float));                   \
        float *expanded = calloc(expanded_size, sizeof(float));                                   \
        if (!taps || !start || !sums || !expanded) {                                              \
            free(taps); free(start); free(sums); free(expanded);                                   \
            return -1;                                                                             \
        }                                                                                          \
        /* each tap's weights, and the bias, repeated once per output pixel */                     \
        for (int64_t t = 0; t < k * k; t++)                                                        \
            for (int64_t c = 0; c < w_out; c++)                                                    \
                for (int64_t o = 0; o < channels; o++)                                             \
                    taps[t * padded_span + c * channels + o] = widen_##SUFFIX(weight[o * k * k + t]); \
        for (int64_t c = 0; c < w_out; c++)                                                        \
            for (int64_t o = 0; o < channels; o++)                                                 \
                start[c * channels + o] = bias ? widen_##SUFFIX(bias[o]) : 0.0f;                   \
        for (int64_t b = 0; b < n; b++) {                                                          \
            expand_##SUFFIX(x + b * h * w, expanded, h, w, channels, pad);                        \
            for (int64_t q = 0; q < span; q += LANES) {                                            \
                vfloat tap[HELD];                                                                  \
                for (int64_t t = 0; held && t < k * k; t++) tap[t] = load(taps + t * padded_span + q); \
                const vfloat first = load(start + q);                                              \
                for (int64_t r = 0; r < h_out; r += ROWS) {                                        \
                    vfloat sum[ROWS];                                                              \
                    for (int u = 0; u < ROWS; u++) sum[u] = first;                                 \
                    /* input row r + m feeds output row r + u through the taps' row m - u */     \
                    const float *in = expanded + r * row + q;                                      \
                    UNROLLED for (int64_t m = 0; m < ROWS + k - 1; m++, in += row)                 \
                        UNROLLED for (int64_t j = 0; j < k; j++) {                                 \
                            const vfloat v = load(in + j * channels);                              \
                            UNROLLED for (int64_t u = 0; u < ROWS; u++) {                          \
                                const int64_t i = m - u, t = i * k + j;                            \
                                if (i >= 0 && i < k)                                               \
                                    sum[u] += v * (held ? tap[t] : load(taps + t * padded_span + q)); \
                            }                                                                      \
                        }                                                                          \
                    for (int u = 0; u < ROWS; u++) store(sums + (r + u) * padded_span + q, sum[u]); \
                }                                                                                  \
            }                                                                                      \
            for (int64_t r = 0; r < h_out; r++)                                                    \
                write_##SUFFIX(y + (b * h_out + r) * span, sums + r * padded_span, span, relu);   \
        }                                                                                          \
        free(taps); free(start); free(sums); free(expanded);                                       \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    static inline __attribute__((always_inline)) int                                              \
    backward_##SUFFIX(const T *x, const T *grad, const T *y, T *grad_weight, T *grad_bias,         \
                      int64_t n, int64_t h, int64_t w, int64_t channels, int64_t k, int64_t pad) {  \
        SHAPE                                                                                      \
        const int held = k * k <= HELD;                                                            \
        /* per tap (and for the bias), one running sum per output position of a row, each adding  \
           an image's h_out products at a time: not all n x h_out x w_out in one float */          \
        float *sums = calloc((size_t)((k * k + 1) * padded_span), sizeof(float));                \
        float *g = calloc((size_t)(h_out * padded_span), sizeof(float));                          \
        float *expanded = calloc(expanded_size, sizeof(float));                                   \
        if (!sums || !g || !expanded) {                                                            \
            free(sums); free(g); free(expanded);                                                   \
            return -1;                                                                             \
        }                                                                                          \
        float *bias_sum = sums + k * k * padded_span;                                              \
        for (int64_t b = 0; b < n; b++) {                                                          \
            expand_##SUFFIX(x + b * h * w, expanded, h, w, channels, pad);                        \
            for (int64_t r = 0; r < h_out; r++) {                                                  \
                const int64_t at = (b * h_out + r) * span;                                         \
                read_##SUFFIX(g + r * padded_span, grad + at, y ? y + at : NULL, span);           \
            }                                                                                      \
            for (int64_t q = 0; q < span; q += LANES) {                                            \
                vfloat tap_sum[HELD] = {0}, bias_part = {0};                                       \
                for (int64_t r = 0; r < h_out; r++) {                                              \
                    const vfloat gv = load(g + r * padded_span + q);                               \
                    bias_part += gv;                                                               \
                    for (int64_t i = 0; i < k; i++)                                                \
                        for (int64_t j = 0; j < k; j++) {                                          \
                            const int64_t t = i * k + j;                                           \
                            const vfloat p = gv * load(expanded + (r + i) * row + j * channels + q); \
                            if (held)                                                              \
                                tap_sum[t] += p;                                                   \
                            else                                                                   \
                                store(sums + t * padded_span + q, load(sums + t * padded_span + q) + p); \
                        }                                                                          \
                }                                                                                  \
                for (int64_t t = 0; held && t < k * k; t++)                                        \
                    store(sums + t * padded_span + q, load(sums + t * padded_span + q) + tap_sum[t]); \
                store(bias_sum + q, load(bias_sum + q) + bias_part);                               \
            }                                                                                      \
        }                                                                                          \
        for (int64_t o = 0; o < channels; o++) {                                                   \
            for (int64_t t = 0; t < k * k + 1; t++) {                                              \
                float total = 0.0f;                                                                \
                for (int64_t c = 0; c < w_out; c++) total += sums[t * padded_span + c * channels + o]; \
                if (t < k * k)                                                                     \
                    grad_weight[o * k * k + t] = narrow_##SUFFIX(total);                           \
                else if (grad_bias)                                                                \
                    grad_bias[o] = narrow_##SUFFIX(total);                                         \
            }                                                                                      \
        }                                                                                          \
        free(sums); free(g); free(expanded);                                                       \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    /* The 3 x 3 kernel (TinyVGG's, and most networks') compiled apart, its tap loops unrolled:  \
       measured 1.5 -> 1.0 ms forward on TinyVGG's batch. */                                       \
    int conv_forward_##SUFFIX(const T *x, const T *weight, const T *bias, T *y, int64_t n,       \
                              int64_t h, int64_t w, int64_t channels, int64_t k, int64_t pad,     \
                              int relu) {                                                          \
        if (k == 3) return forward_##SUFFIX(x, weight, bias, y, n, h, w, channels, 3, pad, relu);  \
        return forward_##SUFFIX(x, weight, bias, y, n, h, w, channels, k, pad, relu);             \
    }                                                                                              \
    int conv_backward_##SUFFIX(const T *x, const T *grad, const T *y, T *grad_weight,            \
                               T *grad_bias, int64_t n, int64_t h, int64_t w, int64_t channels,   \
                               int64_t k, int64_t pad) {                                           \
        if (k == 3)                                                                                \
            return backward_##SUFFIX(x, grad, y, grad_weight, grad_bias, n, h, w, channels, 3, pad); \
        return backward_##SUFFIX(x, grad, y, grad_weight, grad_bias, n, h, w, channels, k, pad);  \
    }

CONV_KERNELS(bfloat16, bfloat16)
CONV_KERNELS(float32, float)
