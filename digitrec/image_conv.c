/* The convolution that reads a one-channel image (a network's first layer), forward and
   backward, for training.

   Why this exists: oneDNN, behind PyTorch's CPU convolution, is built for many input channels.
   With one (a grey digit) it pads the channel dimension out to its vector blocks: TinyVGG's
   first convolution (1 -> 10 channels, 3 x 3, 128 digits, bfloat16, 1 thread) took 0.61 ms
   forward and 1.01 ms for its weights' gradient, and its ReLU two more passes, for about 4 % of
   the training step's arithmetic; this kernel takes 0.69 and 0.60 ms, the ReLU included.

   Here an output pixel's channels (up to one vector register of them at a time, the rest of
   the register zero) are the bias plus k x k products: each tap's weight vector times the input
   pixel under that tap, broadcast to every lane. The backward pass turns it around: each tap's gradient vector gathers the output
   pixel's gradient vector times the same input pixel. For a 3 x 3 kernel and up to one register
   of channels the nine weight vectors (forward) or nine sums (backward) stay in registers, and
   the forward pass works on four pixels at once (four independent chains of additions).

   Arithmetic: float32 throughout. bfloat16 inputs and weights (the forward pass under autocast)
   are widened exactly; each output is the bias plus the taps in row order, rounded once to the
   output's type (round to nearest even, as PyTorch rounds). A weight's gradient adds a row's
   products, then a digit's rows, then the digits. oneDNN adds the same products in another
   order, so results agree to rounding, not bit for bit; tests/test_image_conv.py checks both
   directions against PyTorch's convolution in float64.

   With relu set, the forward pass writes relu(conv(x)) (a negative sum becomes +0; -0 and NaN
   stay, as PyTorch's relu), and the backward pass, given that output, passes the gradient only
   where it is not <= 0, as the ReLU's backward (threshold_backward) would.

   Layout: x is (n, h, w) (a (n, 1, h, w) tensor, the same memory in either layout); weight is
   (channels, k, k); bias is (channels,) or NULL; y and grad are (n, h_out, w_out, channels), a
   channels-last (n, channels, h_out, w_out) tensor, with h_out = h + 2 pad - k + 1 and w_out
   likewise (stride 1, zero padding). The backward pass writes grad_weight (channels, k, k) and,
   unless NULL, grad_bias (channels,); its y is NULL unless a ReLU came after. Each returns 0, -1
   where it could not allocate its buffers, or -2 for sizes it cannot take (negative padding, no
   output pixel). Two element types: bfloat16 and float32. */

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
typedef int32_t vmask __attribute__((vector_size(VECTOR_BYTES)));
typedef uint32_t vbits __attribute__((vector_size(VECTOR_BYTES)));
typedef uint16_t vhalf __attribute__((vector_size(VECTOR_BYTES / 2)));
enum { LANES = VECTOR_BYTES / sizeof(float) };

/* A 3 x 3 kernel's nine vectors are held in registers; larger kernels, or more channels than a
   register holds, keep them in memory. */
enum { HELD = 9 };
/* The forward pass sums PIXELS neighbouring output pixels at once: one pixel's nine products
   form a chain, each addition waiting on the last; four pixels are four chains side by side. */
enum { PIXELS = 4 };
/* Loops of a few, known steps written out, so the 3 x 3 taps' indices fold into constants. */
#define UNROLLED _Pragma("GCC unroll 16")

typedef uint16_t bfloat16;

static inline vfloat load(const float *p) { vfloat v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vfloat v) { memcpy(p, &v, sizeof v); }
static inline vfloat relu_vector(vfloat v) { return (vfloat)((vbits)v & ~(vbits)(v < 0.0f)); }

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

/* Vectors of `count` (1 to LANES) channels from and to memory. Where `room` (the values that may
   be touched from p on) holds a whole vector, one full load or store: the lanes past `count`
   belong to the next pixel, are zeroed after loading, and are written over by that pixel's own
   store, which comes later. Else lane by lane, never past the buffer's end. */
static inline vfloat get_float32(const float *p, int64_t count, int64_t room) {
    if (room >= LANES) return load(p);
    float part[LANES] = {0};
    memcpy(part, p, sizeof(float) * (size_t)count);
    return load(part);
}

static inline vfloat get_bfloat16(const bfloat16 *p, int64_t count, int64_t room) {
    vhalf half = {0};
    if (room >= LANES)
        memcpy(&half, p, sizeof half);
    else
        memcpy(&half, p, sizeof(bfloat16) * (size_t)count);
    return (vfloat)(__builtin_convertvector(half, vbits) << 16);
}

static inline void put_float32(float *p, vfloat v, int64_t count, int64_t room) {
    if (room >= LANES) {
        store(p, v);
        return;
    }
    float part[LANES];
    store(part, v);
    memcpy(p, part, sizeof(float) * (size_t)count);
}

static inline void put_bfloat16(bfloat16 *p, vfloat v, int64_t count, int64_t room) {
    const vbits bits = (vbits)v;
    const vbits nan = (vbits)((bits & 0x7fffffffu) > 0x7f800000u);
    const vbits rounded = (nan & 0x7fc0u) | (~nan & ((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16));
    const vhalf narrow = __builtin_convertvector(rounded, vhalf);
    if (room >= LANES)
        memcpy(p, &narrow, sizeof narrow);
    else
        memcpy(p, &narrow, sizeof(bfloat16) * (size_t)count);
}

/* `count` vectors, zero, aligned as a vector must be (malloc's 16 bytes are not enough), or NULL. */
static vfloat *vectors(int64_t count) {
    vfloat *v = aligned_alloc(sizeof(vfloat), sizeof(vfloat) * (size_t)count);
    if (v) memset(v, 0, sizeof(vfloat) * (size_t)count);
    return v;
}

/* The lanes below `count` all ones, the rest zero. */
static inline vbits first_lanes(int64_t count) {
    vmask lane;
    for (int i = 0; i < LANES; i++) lane[i] = i;
    return (vbits)(lane < (int32_t)count);
}

/* Sizes the kernels can take: at least one output pixel, no negative padding. */
static int valid(int64_t n, int64_t h, int64_t w, int64_t channels, int64_t k, int64_t pad) {
    return n >= 0 && h >= 1 && w >= 1 && channels >= 1 && k >= 1 && pad >= 0 && h + 2 * pad - k + 1 >= 1
           && w + 2 * pad - k + 1 >= 1;
}

/* One image, zero-padded, as floats: row r + i, column c + j is under tap (i, j) of output
   pixel (r, c). */
#define PAD(SUFFIX, T)                                                                             \
    static void pad_##SUFFIX(const T *image, float *padded, int64_t h, int64_t w, int64_t pad) {  \
        const int64_t padded_w = w + 2 * pad;                                                      \
        for (int64_t r = 0; r < h; r++)                                                            \
            for (int64_t c = 0; c < w; c++)                                                        \
                padded[(r + pad) * padded_w + c + pad] = widen_##SUFFIX(image[r * w + c]);        \
    }

/* The sizes every kernel derives from (n, h, w, channels, k, pad). */
#define SHAPE                                                                                      \
    const int64_t h_out = h + 2 * pad - k + 1, w_out = w + 2 * pad - k + 1;                       \
    const int64_t padded_w = w + 2 * pad, taps = k * k;                                            \
    const int held = chunks == 1 && taps <= HELD;

#define CONV_KERNELS(SUFFIX, T)                                                                    \
    PAD(SUFFIX, T)                                                                                 \
                                                                                                   \
    static inline __attribute__((always_inline)) int                                              \
    forward_##SUFFIX(const T *x, const T *weight, const T *bias, T *y, int64_t n, int64_t h,       \
                     int64_t w, int64_t channels, int64_t chunks, int64_t k, int64_t pad, int relu) { \
        SHAPE                                                                                      \
        /* weights[chunk * taps + t]: tap t's weights of that chunk's channels (0 past the last) */ \
        vfloat *weights = vectors(chunks * taps + chunks);                                         \
        float *padded = calloc((size_t)((h + 2 * pad) * padded_w), sizeof(float));                \
        if (!weights || !padded) {                                                                 \
            free(weights); free(padded);                                                           \
            return -1;                                                                             \
        }                                                                                          \
        vfloat *biases = weights + chunks * taps;                                                  \
        for (int64_t o = 0; o < channels; o++) {                                                   \
            for (int64_t t = 0; t < taps; t++)                                                     \
                weights[o / LANES * taps + t][o % LANES] = widen_##SUFFIX(weight[o * taps + t]);  \
            biases[o / LANES][o % LANES] = bias ? widen_##SUFFIX(bias[o]) : 0.0f;                 \
        }                                                                                          \
        vfloat tap[HELD];                                                                          \
        for (int64_t t = 0; held && t < taps; t++) tap[t] = weights[t];                            \
        for (int64_t b = 0; b < n; b++) {                                                          \
            pad_##SUFFIX(x + b * h * w, padded, h, w, pad);                                       \
            for (int64_t r = 0; r < h_out; r++) {                                                  \
                T *out_row = y + (b * h_out + r) * w_out * channels;                               \
                for (int64_t c = 0; c < w_out; c += PIXELS) {                                      \
                    const int64_t pixels = w_out - c < PIXELS ? w_out - c : PIXELS;               \
                    for (int64_t chunk = 0; chunk < chunks; chunk++) {                             \
                        vfloat sum[PIXELS];                                                        \
                        UNROLLED for (int u = 0; u < PIXELS; u++) sum[u] = biases[chunk];          \
                        UNROLLED for (int64_t i = 0; i < k; i++) {                                 \
                            /* past the row's last pixel the reads stay inside the padded image */ \
                            const float *in = padded + (r + i) * padded_w + c;                     \
                            UNROLLED for (int64_t j = 0; j < k; j++) {                             \
                                const int64_t t = i * k + j;                                       \
                                const vfloat wv = held ? tap[t] : weights[chunk * taps + t];       \
                                UNROLLED for (int u = 0; u < PIXELS; u++)                          \
                                    sum[u] += wv * in[j + (u < pixels ? u : 0)];                   \
                            }                                                                      \
                        }                                                                          \
                        const int64_t first = chunk * LANES;                                       \
                        const int64_t count = channels - first < LANES ? channels - first : LANES; \
                        for (int64_t u = 0; u < pixels; u++) {                                     \
                            const int64_t at = (c + u) * channels + first;                         \
                            /* one channel vector: the row's rest; more: this pixel's rest */      \
                            const int64_t room = chunks == 1 ? w_out * channels - at : channels - first; \
                            put_##SUFFIX(out_row + at, relu ? relu_vector(sum[u]) : sum[u], count, room); \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        free(weights); free(padded);                                                               \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    static inline __attribute__((always_inline)) int                                              \
    backward_##SUFFIX(const T *x, const T *grad, const T *y, T *grad_weight, T *grad_bias,         \
                      int64_t n, int64_t h, int64_t w, int64_t channels, int64_t chunks, int64_t k, \
                      int64_t pad) {                                                               \
        SHAPE                                                                                      \
        /* sums: per chunk, each tap's gradient then the bias's; a row's products are added in    \
           `row_sums` (registers for 3 x 3), a digit's rows in `image_sums`, the digits in `sums` */ \
        const int64_t size = chunks * (taps + 1);                                                  \
        vfloat *sums = vectors(3 * size);                                                          \
        float *padded = calloc((size_t)((h + 2 * pad) * padded_w), sizeof(float));                \
        if (!sums || !padded) {                                                                    \
            free(sums); free(padded);                                                              \
            return -1;                                                                             \
        }                                                                                          \
        vfloat *image_sums = sums + size, *row_sums = sums + 2 * size;                             \
        const vbits last_lanes = first_lanes(channels - (chunks - 1) * LANES);                     \
        for (int64_t b = 0; b < n; b++) {                                                          \
            pad_##SUFFIX(x + b * h * w, padded, h, w, pad);                                       \
            memset(image_sums, 0, sizeof(vfloat) * (size_t)size);                                  \
            for (int64_t r = 0; r < h_out; r++) {                                                  \
                const int64_t at_row = (b * h_out + r) * w_out * channels;                         \
                const int64_t left = n * h_out * w_out * channels - at_row; /* to the end */       \
                memset(row_sums, 0, sizeof(vfloat) * (size_t)size);                                \
                vfloat tap_sum[HELD] = {0}, bias_sum = {0};                                        \
                for (int64_t c = 0; c < w_out; c++)                                                \
                    for (int64_t chunk = 0; chunk < chunks; chunk++) {                             \
                        const int64_t first = chunk * LANES, at = c * channels + first;            \
                        const int64_t count = channels - first < LANES ? channels - first : LANES; \
                        vfloat g = get_##SUFFIX(grad + at_row + at, count, left - at);             \
                        if (chunk == chunks - 1) g = (vfloat)((vbits)g & last_lanes);              \
                        if (y) g = (vfloat)((vbits)g & ~(vbits)(get_##SUFFIX(y + at_row + at, count, left - at) <= 0.0f)); \
                        vfloat *part = row_sums + chunk * (taps + 1);                              \
                        if (held) bias_sum += g; else part[taps] += g;                             \
                        UNROLLED for (int64_t i = 0; i < k; i++) {                                 \
                            const float *in = padded + (r + i) * padded_w + c;                     \
                            UNROLLED for (int64_t j = 0; j < k; j++) {                             \
                                if (held) tap_sum[i * k + j] += g * in[j];                         \
                                else part[i * k + j] += g * in[j];                                 \
                            }                                                                      \
                        }                                                                          \
                    }                                                                              \
                if (held) {                                                                        \
                    for (int64_t t = 0; t < taps; t++) row_sums[t] = tap_sum[t];                   \
                    row_sums[taps] = bias_sum;                                                     \
                }                                                                                  \
                for (int64_t s = 0; s < size; s++) image_sums[s] += row_sums[s];                   \
            }                                                                                      \
            for (int64_t s = 0; s < size; s++) sums[s] += image_sums[s];                           \
        }                                                                                          \
        for (int64_t o = 0; o < channels; o++) {                                                   \
            const vfloat *part = sums + o / LANES * (taps + 1);                                    \
            for (int64_t t = 0; t < taps; t++)                                                     \
                grad_weight[o * taps + t] = narrow_##SUFFIX(part[t][o % LANES]);                   \
            if (grad_bias) grad_bias[o] = narrow_##SUFFIX(part[taps][o % LANES]);                  \
        }                                                                                          \
        free(sums); free(padded);                                                                  \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    /* The common case compiled apart, its loops written out and its vectors in registers: a     \
       3 x 3 kernel and channels that fit one vector (TinyVGG's). chunks: vectors per pixel. */    \
    int conv_forward_##SUFFIX(const T *x, const T *weight, const T *bias, T *y, int64_t n,       \
                              int64_t h, int64_t w, int64_t channels, int64_t k, int64_t pad,     \
                              int relu) {                                                          \
        if (!valid(n, h, w, channels, k, pad)) return -2;                                          \
        if (k == 3 && channels <= LANES)                                                           \
            return forward_##SUFFIX(x, weight, bias, y, n, h, w, channels, 1, 3, pad, relu);       \
        return forward_##SUFFIX(x, weight, bias, y, n, h, w, channels, (channels + LANES - 1) / LANES, \
                                k, pad, relu);                                                     \
    }                                                                                              \
    int conv_backward_##SUFFIX(const T *x, const T *grad, const T *y, T *grad_weight,            \
                               T *grad_bias, int64_t n, int64_t h, int64_t w, int64_t channels,   \
                               int64_t k, int64_t pad) {                                           \
        if (!valid(n, h, w, channels, k, pad)) return -2;                                          \
        if (k == 3 && channels <= LANES)                                                           \
            return backward_##SUFFIX(x, grad, y, grad_weight, grad_bias, n, h, w, channels, 1, 3, pad); \
        return backward_##SUFFIX(x, grad, y, grad_weight, grad_bias, n, h, w, channels,           \
                                 (channels + LANES - 1) / LANES, k, pad);                          \
    }

CONV_KERNELS(bfloat16, bfloat16)
CONV_KERNELS(float32, float)
