// The sign-code layout and query record shared by sign_scan.c (compiled once for AVX2 into
// scan_avx2.so and once for AVX-512 into scan_avx512.so), scan_avx2.c's fl_sign_queries and
// sign_codes.py.
//
// Layout: faces in blocks of 512. A block is WORDS words of 64 bytes:
// - words 0..255: the faces' bits on each direction, bit j of a word belonging to face j;
// - words 256..511: the same bits inverted (a word of faces unlike a 1-bit query), so that a
//   query's mismatches on any direction are one load. A face that is not there (removed, or
//   past the end) has both its bits set: it mismatches every query on every direction;
// - word 512: bit j set where face j is there (so the scan never reads the ids);
// - then the faces' codes one after another, 32 bytes a face (bit i % 64 of its 64-bit word
//   i / 64 the sign on direction i), read for the full count of the faces the filter passes.
// An AVX-512 register holds one word (one direction for 512 faces); AVX2 takes a block as two
// halves of 256.
#pragma once
#include <stdint.h>

#define FACES 512                 // faces a block
#define WORD_BYTES 64             // bytes a word
#define DIRECTIONS 256            // sign bits a face
#define INVERTED DIRECTIONS       // first of the inverted words
#define CODE_BYTES 32             // a face's code
#define LIVE (2 * DIRECTIONS)     // the word of faces that are there
#define CODES (LIVE + 1)          // word at which the codes start
#define WORDS (CODES + FACES * CODE_BYTES / WORD_BYTES)
#define STRONG 64                 // directions the filter counts: the query's strongest
#define STRONG_WEIGHT 3           // what a bit unlike the query's counts there in the full count
#define FARTHEST (DIRECTIONS + (STRONG_WEIGHT - 1) * STRONG)  // the largest full count

// A query: its 256 bits; its STRONG strongest directions (largest |projection|) as bits and as
// the byte offsets in a block of the words that hold the faces unlike it there; and `pass`,
// the most of those a face may be unlike it on and still be counted in full.
typedef struct {
  uint64_t bits[DIRECTIONS / 64], strong[DIRECTIONS / 64];
  uint16_t at[STRONG];
  int32_t pass, unused;
} sign_query;
