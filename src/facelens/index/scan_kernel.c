// Exhaustive scan of a face gallery's 4-bit codes on the CPU's AMX tiles, with each query's
// best candidates kept in the scan (a full score matrix would cost more than the products).
// Built by `make setup` into scan_kernel.so and called through ctypes (scan_index.py).
//
// Layout: faces in blocks of 16; a block holds dim/64 tiles of 16 rows x 64 int8 values, row
// r of tile t holding, for each of the 16 faces, its 4 dimensions t*64 + 4r .. t*64 + 4r + 3
// (the operand order TDPBSSD wants). A tile is stored in 512 bytes: byte i carries value i in
// its low nibble and value 512 + i in its high one, each as value + 8 (values -8..7); both
// belong to the same face. At one byte a value the scan was bound by reading the codes; each
// pair of blocks is unpacked into L1 once for all queries. Blocks come in pairs (an even
// count, unused faces past n). Queries are int8 rows of `dim` bytes, padded to 16 rows.
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
  uint8_t palette_id, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

// 0 when this process may use the AMX tile registers (Linux grants them on request).
int fl_scan_enable(void) {
  return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
}

// Put (value, face) in place of the worst of a query's `keep` slots, a min-heap on score (the
// root is the worst); returns the new worst score.
static inline int32_t keep_best(int32_t *score, int64_t *row, int keep, int32_t value,
                                int64_t face) {
  int at = 0;
  for (;;) {
    int child = 2 * at + 1;
    if (child >= keep) break;
    if (child + 1 < keep && score[child + 1] < score[child]) child++;
    if (score[child] >= value) break;
    score[at] = score[child], row[at] = row[child];
    at = child;
  }
  score[at] = value, row[at] = face;
  return score[0];
}

// No query has a floor yet / a padding query never takes a face: far from any score (|score|
// <= 127 * 8 * dim), and negatable without overflow.
#define OPEN (INT32_MIN / 2)
#define SHUT (INT32_MAX / 2)

// One thread's running best `keep` faces of every query. `floor` is each query's worst kept
// score; `start` (used by the AMX scan) holds, per 16 queries, the 16 x 16 tile each product
// starts from: row i is -floor of query i, so a score above its query's floor comes out
// positive. Queries from nq to nqpad are padding, whose floor no face passes.
typedef struct {
  int32_t *score, *floor, *start;
  int64_t *row;
  int keep;
} best_faces;

static best_faces best_open(int nq, int nqpad, int keep) {
  best_faces best = {malloc(sizeof(int32_t) * nq * keep), malloc(sizeof(int32_t) * nqpad),
                     aligned_alloc(64, sizeof(int32_t) * nqpad * 16),
                     malloc(sizeof(int64_t) * nq * keep), keep};
  for (int64_t i = 0; i < (int64_t)nq * keep; i++) best.score[i] = OPEN, best.row[i] = -1;
  for (int i = 0; i < nqpad; i++) {
    best.floor[i] = i < nq ? OPEN : SHUT;
    for (int j = 0; j < 16; j++) best.start[i * 16 + j] = -best.floor[i];
  }
  return best;
}

// Keeps `face` among query q's best if it is live and beats the floor; 1 if it was kept.
static inline int best_take(best_faces *best, int q, int64_t face, int32_t value, int64_t n,
                            const int64_t *labels) {
  if (face >= n || labels[face] < 0 || value <= best->floor[q]) return 0;
  best->floor[q] = keep_best(best->score + (int64_t)q * best->keep,
                             best->row + (int64_t)q * best->keep, best->keep, value, face);
  return 1;
}

// Thread t's best faces into its columns of the output (fl_scan_search says how), then freed.
static void best_close(best_faces *best, int nq, int t, int nt, int32_t *out_score,
                       int64_t *out_row) {
  const int keep = best->keep;
  for (int q = 0; q < nq; q++) {
    memcpy(out_score + ((int64_t)q * nt + t) * keep, best->score + (int64_t)q * keep,
           sizeof(int32_t) * keep);
    memcpy(out_row + ((int64_t)q * nt + t) * keep, best->row + (int64_t)q * keep,
           sizeof(int64_t) * keep);
  }
  free(best->score), free(best->floor), free(best->start), free(best->row);
}

// Scores less floors of up to 32 queries (from q0) x 32 faces (blocks b0, b0 + 1) in four
// 16 x 16 tiles (c[0]: queries 0-15 x b0, c[1]: 0-15 x b0 + 1, c[2], c[3]: queries 16-31),
// and the floors they started from.
typedef struct {
  int32_t c[4][256] __attribute__((aligned(64)));
  int32_t base[32];
  int q0, groups;
  int64_t b0;
} scored_tiles;

static void offer(const scored_tiles *s, best_faces *best, int nq, int64_t n,
                  const int64_t *labels) {
  for (int h = 0; h < 2 * s->groups; h++) {
    const int64_t face0 = (s->b0 + (h & 1)) * 16;
    const int q0 = s->q0 + (h >> 1) * 16;
    const int32_t *c = s->c[h], *base = s->base + (h >> 1) * 16;
    // Most tiles hold no positive value: one test on the rows' maximum (a tree of maxima,
    // not a chain of 15 dependent steps).
    __m512i top[8];
    for (int i = 0; i < 8; i++)
      top[i] = _mm512_max_epi32(_mm512_load_si512((const void *)(c + i * 16)),
                                _mm512_load_si512((const void *)(c + (i + 8) * 16)));
    for (int w = 4; w > 0; w /= 2)
      for (int i = 0; i < w; i++) top[i] = _mm512_max_epi32(top[i], top[i + w]);
    if (!_mm512_cmpgt_epi32_mask(top[0], _mm512_setzero_si512())) continue;
    for (int i = 0; i < 16 && q0 + i < nq; i++) {
      const int q = q0 + i;
      __mmask16 above = _mm512_cmpgt_epi32_mask(_mm512_load_si512((const void *)(c + i * 16)),
                                                _mm512_setzero_si512());
      while (above) {
        const int j = __builtin_ctz(above);
        above &= above - 1;
        // the value again: the floor may have risen since the product started from it
        if (best_take(best, q, face0 + j, c[i * 16 + j] + base[i], n, labels))
          _mm512_store_si512((void *)(best->start + q / 16 * 256 + q % 16 * 16),
                             _mm512_set1_epi32(-best->floor[q]));
      }
    }
  }
}

// A pair of blocks from their 4-bit form into byte tiles: `chunks` 64-byte chunks, chunk c
// being byte 64 * (c % 8) of the (c / 8)th tile, which carries that tile's values at the same
// offset (low nibbles) and 512 further on (high nibbles). `bias` 8 gives int8 values -8..7
// (the AMX product is signed x signed), 0 the stored 0..15 (VNNI's is unsigned x signed).
static inline void unpack(const uint8_t *pair, int chunks, int8_t *out, int8_t bias) {
  const __m512i low = _mm512_set1_epi8(0x0F), shift = _mm512_set1_epi8(bias);
  for (int c = 0; c < chunks; c++) {
    const __m512i x = _mm512_load_si512((const void *)(pair + c * 64));
    int8_t *at = out + c / 8 * 1024 + c % 8 * 64;
    _mm512_store_si512((void *)at, _mm512_sub_epi8(_mm512_and_si512(x, low), shift));
    _mm512_store_si512((void *)(at + 512),
                       _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(x, 4), low), shift));
  }
}

// Each of `nq` queries' best `keep` live faces (label >= 0; -1 is removed) per thread:
// out_score/out_row are nq x (threads * keep), unsorted, row -1 where fewer faces were seen.
// `blocks` and `queries` must be 64-byte aligned (a tile row across two cache lines halves
// the speed).
void fl_scan_search(const uint8_t *blocks, int64_t n, int dim, const int64_t *labels,
                    const int8_t *queries, int nq, int keep, int threads,
                    int32_t *out_score, int64_t *out_row) {
  const int tiles = dim / 64;
  const int64_t pairs = (n + 31) / 32;
  const int nqpad = (nq + 15) / 16 * 16;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) cfg.rows[i] = 16, cfg.colsb[i] = 64;
    _tile_loadconfig(&cfg);
    best_faces best = best_open(nq, nqpad, keep);
    // Two sets of tiles: the last step's scores are offered while this step's products run
    // on the tile unit, and are read only after their stores have long landed.
    scored_tiles *ring = aligned_alloc(64, 2 * sizeof(scored_tiles));
    int8_t *g0 = aligned_alloc(64, 32 * dim), *g1 = g0 + 16 * dim;  // a pair, unpacked
    int pending = 0, step = 0;
    const int64_t first = pairs * t / nt, last = pairs * (t + 1) / nt;
    for (int64_t p = first; p < last; p++) {
      unpack(blocks + p * 16 * dim, dim / 4, g0, 8);
      for (int qg = 0; qg < nqpad; qg += 32, step++) {  // the pair's codes stay in L1
        scored_tiles *now = &ring[step & 1];
        now->q0 = qg, now->b0 = 2 * p;
        now->groups = qg + 16 < nqpad ? 2 : 1;  // the last group may be 16 queries
        const int32_t *from0 = best.start + qg * 16, *from1 = from0 + 256;
        _tile_loadd(4, from0, 64);
        _tile_loadd(5, from0, 64);
        memcpy(now->base, best.floor + qg, sizeof(int32_t) * 16);
        if (now->groups == 2) {
          _tile_loadd(6, from1, 64);
          _tile_loadd(7, from1, 64);
          memcpy(now->base + 16, best.floor + qg + 16, sizeof(int32_t) * 16);
        }
        for (int k = 0; k < tiles; k++) {
          _tile_loadd(0, queries + (int64_t)qg * dim + k * 64, dim);
          _tile_loadd(2, g0 + k * 1024, 64);
          _tile_loadd(3, g1 + k * 1024, 64);
          _tile_dpbssd(4, 0, 2);
          _tile_dpbssd(5, 0, 3);
          if (now->groups == 2) {
            _tile_loadd(1, queries + (int64_t)(qg + 16) * dim + k * 64, dim);
            _tile_dpbssd(6, 1, 2);
            _tile_dpbssd(7, 1, 3);
          }
        }
        if (pending) offer(&ring[(step + 1) & 1], &best, nq, n, labels);
        _tile_stored(4, now->c[0], 64);
        _tile_stored(5, now->c[1], 64);
        if (now->groups == 2) {
          _tile_stored(6, now->c[2], 64);
          _tile_stored(7, now->c[3], 64);
        }
        pending = 1;
      }
    }
    if (pending) offer(&ring[(step + 1) & 1], &best, nq, n, labels);
    _tile_release();
    best_close(&best, nq, t, nt, out_score, out_row);
    free(ring), free(g0);
  }
}

// The same scan where the CPU has AVX-512 VNNI but no AMX. VPDPBUSD multiplies one layout row
// of 16 faces' unsigned codes (the stored 0..15) by 4 int8 values of a query, so a score comes
// out as sum((v + 8) * q): shifted alike for all of a query's faces, which leaves its ranking
// alone. Products are the whole cost here (~7x those of the tiles).
typedef struct {
  int rows;              // code rows of 4 dimensions
  const int32_t *words;  // the queries as 4-byte words, `rows` a query
  const int64_t *labels;
  int64_t n;
  best_faces best;
} vnni_scan;

// A query's faces of one block whose score beats its floor, into its best.
static void vnni_take(vnni_scan *s, __m512i score, int q, int64_t block) {
  __mmask16 above = _mm512_cmpgt_epi32_mask(score, _mm512_set1_epi32(s->best.floor[q]));
  if (!above) return;
  int32_t value[16] __attribute__((aligned(64)));
  _mm512_store_si512((void *)value, score);
  while (above) {
    const int j = __builtin_ctz(above);
    above &= above - 1;
    best_take(&s->best, q, block * 16 + j, value[j], s->n, s->labels);
  }
}

// One query against one block: four chains (one would wait on each product's latency).
static __m512i vnni_block(const int8_t *codes, const int32_t *words, int rows) {
  __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                  _mm512_setzero_si512()};
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    for (int u = 0; u < 4; u++)
      a[u] = _mm512_dpbusd_epi32(a[u], _mm512_load_si512((const void *)(codes + (r + u) * 64)),
                                 _mm512_set1_epi32(words[r + u]));
  for (; r < rows; r++)
    a[0] = _mm512_dpbusd_epi32(a[0], _mm512_load_si512((const void *)(codes + r * 64)),
                               _mm512_set1_epi32(words[r]));
  return _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
}

// Eight queries from q0 against a pair of unpacked blocks (g0 = block b0, g1 = b0 + 1): 16
// accumulators named one by one (gcc spills an array of them to the stack).
#define VNNI_ROW(i)                                                      \
  {                                                                      \
    const __m512i w = _mm512_set1_epi32(words[(q0 + i) * s->rows + r]); \
    x##i = _mm512_dpbusd_epi32(x##i, c0, w);                             \
    y##i = _mm512_dpbusd_epi32(y##i, c1, w);                             \
  }
#define VNNI_OVER(i)                                                                         \
  _mm512_max_epi32(_mm512_sub_epi32(x##i, _mm512_set1_epi32(s->best.floor[q0 + i])),         \
                   _mm512_sub_epi32(y##i, _mm512_set1_epi32(s->best.floor[q0 + i])))
#define VNNI_TAKE(i)                  \
  vnni_take(s, x##i, q0 + i, b0);    \
  vnni_take(s, y##i, q0 + i, b0 + 1);

static void vnni_eight(vnni_scan *s, const int8_t *g0, const int8_t *g1, int q0, int64_t b0) {
  const int32_t *words = s->words;
  __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0,
          x7 = x0, y0 = x0, y1 = x0, y2 = x0, y3 = x0, y4 = x0, y5 = x0, y6 = x0, y7 = x0;
  for (int r = 0; r < s->rows; r++) {
    const __m512i c0 = _mm512_load_si512((const void *)(g0 + r * 64));
    const __m512i c1 = _mm512_load_si512((const void *)(g1 + r * 64));
    VNNI_ROW(0) VNNI_ROW(1) VNNI_ROW(2) VNNI_ROW(3)
    VNNI_ROW(4) VNNI_ROW(5) VNNI_ROW(6) VNNI_ROW(7)
  }
  // the common case: no face of either block above any of the eight floors
  const __m512i over = _mm512_max_epi32(
      _mm512_max_epi32(_mm512_max_epi32(VNNI_OVER(0), VNNI_OVER(1)),
                       _mm512_max_epi32(VNNI_OVER(2), VNNI_OVER(3))),
      _mm512_max_epi32(_mm512_max_epi32(VNNI_OVER(4), VNNI_OVER(5)),
                       _mm512_max_epi32(VNNI_OVER(6), VNNI_OVER(7))));
  if (!_mm512_cmpgt_epi32_mask(over, _mm512_setzero_si512())) return;
  VNNI_TAKE(0) VNNI_TAKE(1) VNNI_TAKE(2) VNNI_TAKE(3)
  VNNI_TAKE(4) VNNI_TAKE(5) VNNI_TAKE(6) VNNI_TAKE(7)
}

// As fl_scan_search (same arguments and output), on VNNI; scores are the shifted ones.
void fl_scan_search_vnni(const uint8_t *blocks, int64_t n, int dim, const int64_t *labels,
                         const int8_t *queries, int nq, int keep, int threads,
                         int32_t *out_score, int64_t *out_row) {
  const int64_t pairs = (n + 31) / 32;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    vnni_scan s = {dim / 4, (const int32_t *)queries, labels, n, best_open(nq, nq, keep)};
    int8_t *g0 = aligned_alloc(64, 32 * dim), *g1 = g0 + 16 * dim;
    const int64_t first = pairs * t / nt, last = pairs * (t + 1) / nt;
    for (int64_t p = first; p < last; p++) {
      unpack(blocks + p * 16 * dim, dim / 4, g0, 0);
      int q = 0;
      for (; q + 8 <= nq; q += 8) vnni_eight(&s, g0, g1, q, 2 * p);
      for (; q < nq; q++) {  // the queries past the last eight, one at a time
        const int32_t *w = s.words + (int64_t)q * s.rows;
        vnni_take(&s, vnni_block(g0, w, s.rows), q, 2 * p);
        vnni_take(&s, vnni_block(g1, w, s.rows), q, 2 * p + 1);
      }
    }
    best_close(&s.best, nq, t, nt, out_score, out_row);
    free(g0);
  }
}

// Queries as int8 codes: projected on the code axes (dim x code_dims, row-major), scaled per
// axis, then each row stretched to +-127 (a per-query factor, which leaves its ranking alone).
void fl_project(const float *queries, int nq, int dim, const float *axes, const float *scale,
                int code_dims, int8_t *out) {
  float *row = malloc(sizeof(float) * code_dims);
  for (int q = 0; q < nq; q++) {
    for (int c = 0; c < code_dims; c++) row[c] = 0;
    for (int d = 0; d < dim; d++) {
      const float x = queries[(int64_t)q * dim + d];
      const float *a = axes + (int64_t)d * code_dims;
      for (int c = 0; c < code_dims; c++) row[c] += x * a[c];
    }
    float top = 1e-12f;
    for (int c = 0; c < code_dims; c++) {
      row[c] *= scale[c];
      top = fabsf(row[c]) > top ? fabsf(row[c]) : top;
    }
    for (int c = 0; c < code_dims; c++)
      out[(int64_t)q * code_dims + c] = (int8_t)lrintf(row[c] * 127 / top);
  }
  free(row);
}
