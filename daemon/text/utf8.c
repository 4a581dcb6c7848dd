#include "utf8.h"

#include <string.h>

enum dsd_utf8_kind dsd_utf8_scan(const uint8_t *s, size_t n, size_t *len)
{
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *len = 1;
        return DSD_UTF8_CHAR;
    }
    /* Table 3-7: the lead byte fixes the length and the range of the first continuation
     * byte (narrower after E0, ED, F0 and F4); later continuations are always 80..BF. */
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 3;
        if (b0 == 0xE0)
            lo = 0xA0;
        else if (b0 == 0xED)
            hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 4;
        if (b0 == 0xF0)
            lo = 0x90;
        else if (b0 == 0xF4)
            hi = 0x8F;
    } else {
        *len = 1; /* 80..C1 and F5..FF never start a character */
        return DSD_UTF8_INVALID;
    }
    size_t i = 1;
    for (; i < need; i++) {
        if (i >= n) {
            *len = i;
            return DSD_UTF8_TRUNCATED;
        }
        uint8_t b = s[i];
        if (b < lo || b > hi) {
            *len = i;
            return DSD_UTF8_INVALID;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    *len = need;
    return DSD_UTF8_CHAR;
}

size_t dsd_utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* Most text is ASCII: step over 8 bytes at a time while no high bit is set. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t len;
        if (dsd_utf8_scan(s + i, n - i, &len) != DSD_UTF8_CHAR)
            return i;
        i += len;
    }
    return n;
}

size_t dsd_utf8_truncated_tail(const uint8_t *s, size_t n)
{
    /* A truncated character is at most 3 bytes long, so its lead is among the last 3. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t b = s[n - k];
        if ((b & 0xC0) == 0x80)
            continue; /* a continuation byte: keep looking back for the lead */
        size_t len;
        return dsd_utf8_scan(s + n - k, k, &len) == DSD_UTF8_TRUNCATED ? k : 0;
    }
    return 0;
}

uint32_t dsd_utf8_decode(const uint8_t *s, size_t len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    case 3: return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    default:
        return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
               (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    }
}

size_t dsd_utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Walks s, calling back for each valid run and each ill-formed part; out == NULL counts. */
static size_t lossy_walk(char *out, const uint8_t *s, size_t n)
{
    size_t i = 0, w = 0;
    while (i < n) {
        size_t run = dsd_utf8_valid_prefix(s + i, n - i);
        if (out)
            memcpy(out + w, s + i, run);
        w += run;
        i += run;
        if (i >= n)
            break;
        size_t len;
        dsd_utf8_scan(s + i, n - i, &len); /* INVALID or TRUNCATED: both become U+FFFD */
        if (out)
            memcpy(out + w, DSD_UTF8_REPLACEMENT, 3);
        w += 3;
        i += len;
    }
    return w;
}

size_t dsd_utf8_lossy_len(const uint8_t *s, size_t n)
{
    return lossy_walk(NULL, s, n);
}

size_t dsd_utf8_lossy_copy(char *out, const uint8_t *s, size_t n)
{
    return lossy_walk(out, s, n);
}
