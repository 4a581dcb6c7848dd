/* Exact top-k selection (contract in topk.h). */
#include "topk.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

/* (score desc, index asc) order; NaN ranks below everything. */
static int better(float sa, int ia, float sb, int ib)
{
    bool na = isnan(sa), nb = isnan(sb);
    if (na != nb)
        return nb;
    if (!na && sa != sb)
        return sa > sb;
    return ia < ib;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void dsd_topk(const float *scores, int n, int k, int32_t *out)
{
    if (k <= 0)
        return;
    if (k >= n) {
        for (int i = 0; i < n; i++)
            out[i] = i;
        return;
    }
    /* A min-heap (by `better`) of the k best seen so far: out[0] is the worst kept. */
    int size = 0;
    for (int i = 0; i < n; i++) {
        if (size < k) {
            int c = size++;
            out[c] = i;
            while (c > 0) {
                int p = (c - 1) / 2;
                if (!better(scores[out[p]], out[p], scores[out[c]], out[c]))
                    break;
                int32_t t = out[p];
                out[p] = out[c];
                out[c] = t;
                c = p;
            }
        } else if (better(scores[i], i, scores[out[0]], out[0])) {
            out[0] = i;
            int c = 0;
            for (;;) {
                int l = 2 * c + 1, r = l + 1, m = c;
                if (l < size && better(scores[out[m]], out[m], scores[out[l]], out[l]))
                    m = l;
                if (r < size && better(scores[out[m]], out[m], scores[out[r]], out[r]))
                    m = r;
                if (m == c)
                    break;
                int32_t t = out[m];
                out[m] = out[c];
                out[c] = t;
                c = m;
            }
        }
    }
    qsort(out, (size_t)k, sizeof *out, cmp_i32);
}
