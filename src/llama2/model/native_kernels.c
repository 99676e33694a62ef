/* y = x @ w.T in float32 over a weight in column blocks (model/native.py builds and loads this).
 *
 * The weight (N, K) is stored as (ceil(N / 32), K, 32): block b holds outputs 32b..32b+31, and for each
 * k their 32 weights side by side (zero rows pad the last block). A block is then read front to back
 * once per 8 rows of x: for each k, two 16-wide weight vectors times x[m, k] broadcast, into two
 * accumulators per row, so there is no horizontal sum and a block (96 KB at K = 768) stays in the L2
 * cache while the next 8 rows reuse it. Decoding (1 to 8 rows) streams the weights once; prefill
 * (hundreds of rows) re-reads each block from L2. Blocks are shared among OpenMP threads, each
 * taking a contiguous run of them.
 *
 * Vectors are GCC/Clang vector extensions: 16 floats, one AVX-512 register, or two AVX2 ones, as
 * -march=native allows.
 */
#include <stdint.h>

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
#include <math.h>
#include <stdlib.h>

static inline float dot(const float *a, const float *b, int64_t D) {
    if (D % 16 == 0) {
        vec_unaligned acc = {0};
        for (int64_t d = 0; d < D; d += 16) acc += *(const vec_unaligned *)(a + d) * *(const vec_unaligned *)(b + d);
        float s = 0;
        for (int i = 0; i < 16; i++) s += acc[i];
        return s;
    }
    float s = 0;
    for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
    return s;
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
                p[s] = (mb && !mb[s]) ? -INFINITY : dot(qh, kh + s * D, D) * scale;
                if (p[s] > top) top = p[s];
            }
            float *o = out + bh * D;
            for (int64_t d = 0; d < D; d++) o[d] = 0;
            if (top == -INFINITY) continue; /* no slot to attend: zeros */
            for (int64_t s = 0; s < S; s++) {
                float e = p[s] == -INFINITY ? 0 : expf(p[s] - top);
                total += e;
                if (e == 0) continue;
                const float *vs = vh + s * D;
                for (int64_t d = 0; d < D; d++) o[d] += e * vs[d];
            }
            for (int64_t d = 0; d < D; d++) o[d] /= total;
        }
        free(p);
    }
    return failed;
}
