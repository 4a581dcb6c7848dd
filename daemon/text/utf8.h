/*
 * daemon/text/utf8.h: the UTF-8 rules the text layer shares.
 *
 * One primitive, dsd_utf8_scan(), classifies the bytes at a position as a complete
 * well-formed character, the start of one that the input cuts short, or an ill-formed
 * stretch; everything else is built on it:
 *
 *   size_t len;
 *   switch (dsd_utf8_scan(p, end - p, &len)) {
 *   case DSD_UTF8_CHAR:       one character of len bytes
 *   case DSD_UTF8_TRUNCATED:  len bytes that may still become a character
 *   case DSD_UTF8_INVALID:    len bytes (1-3) that never will
 *   }
 *
 * "Well-formed" is Unicode's Table 3-7: no overlong forms, no surrogates (U+D800-DFFF),
 * nothing above U+10FFFF. An ill-formed stretch is a "maximal subpart" (Unicode §3.9,
 * U+FFFD substitution of maximal subparts): the longest prefix of a well-formed sequence,
 * or one byte. Replacing each with U+FFFD is what WHATWG, Python's "replace" and Rust's
 * String::from_utf8_lossy do, so our lossy text equals theirs byte for byte.
 */
#ifndef DSD_TEXT_UTF8_H
#define DSD_TEXT_UTF8_H

#include <stddef.h>
#include <stdint.h>

enum dsd_utf8_kind {
    DSD_UTF8_CHAR = 0,      /* *len = 1..4 bytes of one well-formed character */
    DSD_UTF8_TRUNCATED = 1, /* the n bytes given are a proper prefix of a character */
    DSD_UTF8_INVALID = 2,   /* *len = 1..3 bytes of a maximal ill-formed subpart */
};

/* The UTF-8 encoding of U+FFFD, what lossy conversion writes for each ill-formed part. */
#define DSD_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Classifies the bytes at s (n >= 1). */
enum dsd_utf8_kind dsd_utf8_scan(const uint8_t *s, size_t n, size_t *len);

/* Length of the longest well-formed prefix of s[0..n). */
size_t dsd_utf8_valid_prefix(const uint8_t *s, size_t n);

/* Number of bytes at the end of s[0..n) that form a truncated character (0..3): what a
 * stream must hold back until more bytes arrive. */
size_t dsd_utf8_truncated_tail(const uint8_t *s, size_t n);

/* Decodes the well-formed character at s (as classified DSD_UTF8_CHAR). */
uint32_t dsd_utf8_decode(const uint8_t *s, size_t len);

/* Writes the UTF-8 form of code point cp (<= 0x10FFFF) into out; returns 1..4. */
size_t dsd_utf8_encode(uint32_t cp, uint8_t out[4]);

/* Bytes needed to write s[0..n) with each ill-formed part replaced by U+FFFD, a truncated
 * tail included (it is ill-formed once nothing follows). */
size_t dsd_utf8_lossy_len(const uint8_t *s, size_t n);

/* Writes that lossy form into out (dsd_utf8_lossy_len(s, n) bytes); returns its length. */
size_t dsd_utf8_lossy_copy(char *out, const uint8_t *s, size_t n);

#endif
