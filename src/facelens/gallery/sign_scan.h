// The sign-code layout and query record shared by sign_scan.c (compiled once for AVX2 into
// scan_avx2.so and once for AVX-512 into scan_kernel.so) and scan_avx2.c's fl_sign_queries.
//
// Layout: faces in blocks of 512; a block is WORDS words of 512 bits (64 bytes), bit j of a
// word belonging to face j of the block: words 0..255 are the faces' bits on each direction,
// 256..264 the 9 bit planes of each face's count of 1-bits, 265 a word of zeros (padding).
// An AVX-512 register holds one word (one direction for 512 faces); AVX2 takes a block as two
// halves of 256 faces.
#pragma once
#include <stdint.h>

#define FACES 512          // faces a block
#define WORD_BYTES 64      // bytes a word
#define WORDS 266
#define COUNT_PLANES 256  // first of the 9 planes of each face's count of 1-bits
#define ZERO_WORD 265
#define MAX_SET 128        // the smaller of a query's two sets has at most 128 directions

// A query: the directions of the smaller of its 0-bit and 1-bit sets, as byte offsets of
// their words in a block (WORD_BYTES x direction: no shift per load), padded with ZERO_WORD's
// to `groups` of 16; `ones` is 1 when that set is the 1-bits; `n1` its count of 1-bits.
typedef struct {
  uint16_t at[MAX_SET];
  int32_t groups, ones, n1;
} sign_query;
