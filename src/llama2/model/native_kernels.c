/* Float32 kernels for CPU inference (model/native.py builds and loads this): the matrix product,
 * decoding's attention over the KV cache, and RMSNorm.
 *
 * The product, y = x @ w.T: the weight (N, K) is stored as (ceil(N / 32), K, 32): block b holds
 * outputs 32b..32b+31, and for each k their 32 weights side by side (zero rows pad the last block).
 * A block is then read front to back once per 8 rows of x: for each k, two 16-wide weight vectors
 * times x[m, k] broadcast, into two accumulators per row, so there is no horizontal sum and a block
 * (96 KB at K = 768) stays in the L2 cache while the next 8 rows reuse it. Decoding (1 to 8 rows)
 * streams the weights once; prefill (hundreds of rows) re-reads each block from L2. Blocks are
 * shared among OpenMP threads, each taking a contiguous run of them.
 *
 * Vectors are GCC/Clang vector extensions: 16 floats, one AVX-512 register, or two AVX2 ones, as
 * -march=native allows.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef float vec __attribute__((vector_size(64), aligned(64))); /* a block row: torch allocates 64-aligned */
typedef float vec_unaligned __attribute__((vector_size(64), aligned(4)));

#define BLOCK 32
#define ROWS 8

/* Rows m < MM of x (row stride K) against one weight block; writes y[m, 0..cols) (row stride N). */
#define TILE(MM)                                                                                     \
    static void tile_##MM(const float *x, int64_t K, const float *block, float *y, int64_t N, int cols) { \
        vec lo[MM], hi[MM];                                                                          \
        for (int m = 0; m < MM; m++) lo[m] = hi[m] = (vec){0};                                       \
        for (int64_t k = 0; k < K; k++) {                                                            \
            vec w_lo = *(const vec *)(block + k * BLOCK), w_hi = *(const vec *)(block + k * BLOCK + 16); \
            for (int m = 0; m < MM; m++) {                                                           \
                float xk = x[m * K + k];                                                             \
                lo[m] += w_lo * xk;                                                                  \
                hi[m] += w_hi * xk;                                                                  \
            }                                                                                        \
        }                                                                                            \
        for (int m = 0; m < MM; m++) {                                                               \
            float *out = y + m * N;                                                                  \
            if (cols == BLOCK) {                                                                     \
                *(vec_unaligned *)out = lo[m];                                                       \
                *(vec_unaligned *)(out + 16) = hi[m];                                                \
            } else {                                                                                 \
                for (int c = 0; c < cols; c++) out[c] = c < 16 ? lo[m][c] : hi[m][c - 16];           \
            }                                                                                        \
        }                                                                                            \
    }

TILE(1) TILE(2) TILE(3) TILE(4) TILE(5) TILE(6) TILE(7) TILE(8)

typedef void (*tile_fn)(const float *, int64_t, const float *, float *, int64_t, int);
static const tile_fn TILES[ROWS + 1] = {0, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6, tile_7, tile_8};

int native_block_size(void) { return BLOCK; }

/* x (M, K) row-major, w blocked as above, y (M, N) row-major. */
void native_linear_f32(const float *x, const float *w, float *y, int64_t M, int64_t N, int64_t K, int threads) {
    int64_t blocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const float *block = w + b * K * BLOCK;
        int cols = N - b * BLOCK < BLOCK ? (int)(N - b * BLOCK) : BLOCK;
        for (int64_t m0 = 0; m0 < M; m0 += ROWS) {
            int rows = M - m0 < ROWS ? (int)(M - m0) : ROWS;
            TILES[rows](x + m0 * K, K, block, y + m0 * N + b * BLOCK, N, cols);
        }
    }
}

/* Decoding attention: one query per (row, head) over the first S slots of a KV cache.
 *
 * q and out are (B, H, D) contiguous; k and v point at slot 0 of row 0, head 0 of the cache, with
 * `row_stride` and `head_stride` between rows and kv heads and D between slots (the cache's
 * (B, n_kv, S_max, D) layout); query head h reads kv head h / (H / n_kv) (grouped-query attention).
 * `mask` (B, S), 1 = attend, or NULL for all S. softmax(q.k * scale) in float32, then the weighted
 * sum of values — what PyTorch's fused kernel computes, without its per-problem set-up, which at
 * batch 8 (96 problems of one query per layer) cost more than reading the cache. */

#define AHEAD 8 /* slots prefetched ahead of the one being read */

typedef float half_vec __attribute__((vector_size(32)));
typedef float quarter_vec __attribute__((vector_size(16)));

/* The sum of a vector's 16 lanes as a tree of halvings (a lane-by-lane sum is a chain of 15 adds). */
static inline float lane_sum(vec_unaligned v) {
    half_vec lo, hi;
    __builtin_memcpy(&lo, &v, sizeof lo);
    __builtin_memcpy(&hi, (const char *)&v + sizeof lo, sizeof hi);
    lo += hi;
    quarter_vec a, b;
    __builtin_memcpy(&a, &lo, sizeof a);
    __builtin_memcpy(&b, (const char *)&lo + sizeof a, sizeof b);
    a += b;
    return (a[0] + a[2]) + (a[1] + a[3]);
}

static inline float dot(const float *a, const float *b, int64_t D) {
    if (D % 16 == 0) {
        vec_unaligned acc = {0};
        for (int64_t d = 0; d < D; d += 16) acc += *(const vec_unaligned *)(a + d) * *(const vec_unaligned *)(b + d);
        return lane_sum(acc);
    }
    float s = 0;
    for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

/* o = sum_s p[s] * v[s] / total over rows of n 16-wide vectors, the output row held in registers
   (n is a constant at each call, so the loops unroll). */
static inline __attribute__((always_inline)) void weighted_rows(const float *v, const float *p, int64_t S, int n,
                                                                 float total, float *o) {
    vec_unaligned acc[8];
    for (int i = 0; i < n; i++) acc[i] = (vec_unaligned){0};
    for (int64_t s = 0; s < S; s++) {
        const float *vs = v + s * n * 16;
        for (int i = 0; i < n; i++) __builtin_prefetch(vs + (AHEAD * n + i) * 16);
        for (int i = 0; i < n; i++) acc[i] += *(const vec_unaligned *)(vs + 16 * i) * p[s];
    }
    for (int i = 0; i < n; i++) *(vec_unaligned *)(o + 16 * i) = acc[i] / total;
}

int native_decode_attention_f32(const float *q, const float *k, const float *v, const unsigned char *mask, float *out,
                                int64_t B, int64_t H, int64_t n_kv, int64_t S, int64_t D, int64_t row_stride,
                                int64_t head_stride, float scale, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *p = malloc(sizeof(float) * (S > 0 ? S : 1));
        if (p == NULL) failed = 1;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * H; bh++) {
            if (p == NULL) continue;
            int64_t b = bh / H, h = bh % H, g = h / (H / n_kv);
            const float *qh = q + bh * D, *kh = k + b * row_stride + g * head_stride, *vh = v + b * row_stride + g * head_stride;
            const unsigned char *mb = mask ? mask + b * S : NULL;
            float top = -INFINITY, total = 0;
            for (int64_t s = 0; s < S; s++) {
                /* A head's slots are short runs (a few KB), too short for the hardware prefetcher to
                   ramp up on: fetch keys a few slots ahead (`weighted_rows` does the same for values). */
                for (int64_t line = 0; line < D; line += 16) __builtin_prefetch(kh + (s + AHEAD) * D + line);
                p[s] = (mb && !mb[s]) ? -INFINITY : dot(qh, kh + s * D, D) * scale;
                if (p[s] > top) top = p[s];
            }
            float *o = out + bh * D;
            if (top == -INFINITY) { /* no slot to attend: zeros */
                for (int64_t d = 0; d < D; d++) o[d] = 0;
                continue;
            }
            for (int64_t s = 0; s < S; s++) {
                p[s] = expf(p[s] - top); /* exp(-inf) = 0 for masked slots */
                total += p[s];
            }
            if (D == 64) {
                weighted_rows(vh, p, S, 4, total, o);
            } else if (D == 128) {
                weighted_rows(vh, p, S, 8, total, o);
            } else {
                for (int64_t d = 0; d < D; d++) o[d] = 0;
                for (int64_t s = 0; s < S; s++)
                    for (int64_t d = 0; d < D; d++) o[d] += p[s] * vh[s * D + d];
                for (int64_t d = 0; d < D; d++) o[d] /= total;
            }
        }
        free(p);
    }
    return failed;
}

/* RMSNorm of each row of x (rows, dim) into y: x / sqrt(mean(x^2) + eps) * w, in float32. One call
 * instead of the six small ops PyTorch's CPU norm runs, 25 times per decoding step. */
void native_rms_norm_f32(const float *x, const float *w, float *y, int64_t rows, int64_t dim, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        float squares = 0;
        int64_t d = 0;
        if (dim >= 16) {
            vec_unaligned acc = {0};
            for (; d + 16 <= dim; d += 16) {
                vec_unaligned v = *(const vec_unaligned *)(xr + d);
                acc += v * v;
            }
            squares = lane_sum(acc);
        }
        for (; d < dim; d++) squares += xr[d] * xr[d];
        float scale = 1.0f / sqrtf(squares / (float)dim + eps);
        for (d = 0; d < dim; d++) yr[d] = xr[d] * scale * w[d];
    }
}
