// Sampling on the GPU with a row in slices (sampler = slices; cuda_sample.cu has the one-CTA-
// per-row kernel and picks). Contract in kernels/ops.h, semantics and the reference in
// kernels/sample.h / kernels/sample_ref.c, docs/SAMPLING.md; design and timings in
// docs/KERNELS.md "Sampling".
//
// A row of logits is cut into slices of SP_SLICE ids, one CTA per (slice, row), so that a
// batch of one row still spreads over the GPU. The work goes in six launches; in each, the
// CTA of a row that finishes last (a ticket counter per row and launch) combines the row's
// per-slice partial results in slice order and decides what the next launch does:
//   1. max:    the transformed logits' max and arg-max (the greedy pick), the raw logits' max
//              and, when logprobs are asked, each slice's n_top largest raw logits;
//   2. mass:   the mass Z = sum exp(x - max) and the count min-p allows; the first radix pass
//              of the two selections below; the raw log-sum-exp's partial sums;
//   3-5. radix: the next three 8-bit passes. Two selections run side by side over the bits of
//              p: by mass, the shortest prefix of the order (p descending, id ascending) whose
//              mass reaches top_p Z, and by count, the element of rank min(top-k, #{p >= min_p});
//              the kept prefix is the shorter of the two (its last element's key K and how
//              many ids tied at K it keeps);
//   6. draw:   per slice the ties at K and the mass above K; the last CTA finds the last kept
//              tie and the slice where the running kept mass passes u times the kept mass,
//              walks that slice in ascending id order to the pick, and writes the result, the
//              logprobs and the penalty state.
// Masses are sums of p in 32.32 fixed point (integers): exact and independent of the order of
// the additions, so a seeded request gets the same tokens on every run and in any batch (a
// row's result depends on its own row only). Rows decided early (greedy, or nothing with mass)
// are decided by the first launch's last CTA; the later launches skip their selection work.
// The radix histograms are built in shared memory with one atomic per run of equal bins of a
// thread (the top bits of a row's probabilities are mostly shared: one atomic per id would
// serialize), then added into the row's histogram in global memory.
#include <math.h>
#include <stdint.h>

#include "cuda_backend.h"
#include "cuda_sample_util.h"

using namespace dsd_sample;

#define SP_THREADS 256
#define SP_WARPS (SP_THREADS / 32)
#define SP_PER_THREAD 16
#define SP_SLICE (SP_THREADS * SP_PER_THREAD)
#define SP_PASSES 4
#define SP_LAUNCHES 6

namespace {

// The two selections: SEL_MASS (weights fixq(p), with the counts beside them) and SEL_COUNT.
enum { SEL_MASS = 0, SEL_COUNT = 1 };
// A row's radix histograms, one set per pass: mass-selection weights, mass-selection counts,
// count-selection counts.
enum { H_MASS = 0, H_MASS_CNT = 1, H_COUNT = 2, H_N = 3 };

// One slice's results, written by its CTA and read by the row's last CTA of a launch.
struct sp_part {
    float m, raw_max;
    arg best;
    unsigned long long zq, n_minp, ties, mass_above;
    double z;
    int64_t last_above;
    arg top[DSD_SAMPLE_MAX_TOP];
};

// One row's state across the launches, zeroed at the start of the op.
struct sp_row {
    unsigned int ticket[SP_LAUNCHES];
    int decided;                // the pick is known (greedy, nothing with mass, n = 0)
    int status;                 // DSD_SAMPLE_OK or DSD_SAMPLE_NONFINITE (no finite maximum)
    int mass_on;                // top-p < 1: the mass selection runs
    float m, raw_max;
    arg best;
    int64_t pick;
    unsigned long long n0;      // min(top-k, #{p >= min_p}): the count selection's rank
    unsigned long long target0; // the mass selection's target, ceil(top_p Z)
    unsigned long long zq;
    double z;
    uint32_t prefix[2];
    unsigned long long target[2], above[2], cnt_above;
    uint32_t K;                 // the key of the kept prefix's last element
    unsigned long long need_ties;   // how many ids tied at K it keeps (in ascending id order)
    unsigned long long hist[SP_PASSES][H_N][256];
};

struct sample_args : op_args {
    struct sp_row *st;          // [rows]
    struct sp_part *part;       // [rows][slices]
};

// What every CTA of a launch sets up: its row's parameters, context and slice.
struct cta {
    struct dsd_sample_row r;
    row_ctx c;
    struct sp_row *st;
    struct sp_part *part;       // this row's slices
    int slice, n_slices;
    int64_t i0;                 // the slice's first id
};

__device__ cta cta_setup(const sample_args &a)
{
    cta t;
    const int row = blockIdx.y;
    t.r = a.rows[row];
    t.c = row_ctx_of(t.r, a.logits, a.pen, row, a.V);
    t.st = a.st + row;
    t.n_slices = gridDim.x;
    t.slice = blockIdx.x;
    t.part = a.part + (size_t)row * t.n_slices;
    t.i0 = (int64_t)t.slice * SP_SLICE;
    return t;
}

// The ids a thread handles in the slice passes (coalesced): i0 + tid + j * SP_THREADS.
__device__ __forceinline__ int64_t strided_id(const cta &t, int j)
{
    return t.i0 + threadIdx.x + (int64_t)j * SP_THREADS;
}

// After a CTA published its partial results: whether it is the row's last of launch `k`
// (then every other CTA's results are visible to it).
__device__ bool last_of_row(const cta &t, int k, int *sh_flag)
{
    __threadfence();            // every thread's partial results and histogram atomics first
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned int n = atomicAdd(&t.st->ticket[k], 1u);
        *sh_flag = n == (unsigned int)t.n_slices - 1;
    }
    __syncthreads();
    const bool last = *sh_flag;
    if (last)
        __threadfence();
    return last;
}

// Reads of what other CTAs wrote in this launch go to L2 (no stale L1 lines).
template <typename T> __device__ __forceinline__ T ld(const T *p)
{
    return *(const volatile T *)p;
}

__device__ __forceinline__ arg ld_arg(const arg *p)
{
    arg a;
    a.v = ld(&p->v);
    a.i = ld(&p->i);
    return a;
}

// Histogram updates of one thread: consecutive updates to one bin are merged first.
struct run_acc {
    int bin;
    unsigned long long w, n;
};

__device__ __forceinline__ void run_flush(run_acc &r, unsigned long long *wh, unsigned long long *nh)
{
    if (r.bin >= 0) {
        atomicAdd(&wh[r.bin], r.w);
        if (nh)
            atomicAdd(&nh[r.bin], r.n);
    }
    r.bin = -1;
    r.w = r.n = 0;
}

__device__ __forceinline__ void run_add(run_acc &r, int bin, unsigned long long w, unsigned long long *wh,
                                        unsigned long long *nh)
{
    if (bin != r.bin)
        run_flush(r, wh, nh);
    r.bin = bin;
    r.w += w;
    r.n += 1;
}

// A pass's histograms of this slice (prefix/mask per selection; pass = 0..3, bits from the
// top), added into the row's histograms in global memory.
__device__ void radix_pass(const cta &t, int pass, unsigned long long (*sh)[256])
{
    const int shift = 24 - 8 * pass;
    const uint32_t mask = pass ? 0xffffffffu << (32 - 8 * pass) : 0u;
    struct sp_row *st = t.st;
    const bool mass_on = ld(&st->mass_on);
    const uint32_t pre_m = ld(&st->prefix[SEL_MASS]), pre_c = ld(&st->prefix[SEL_COUNT]);
    const float m = ld(&st->m);
    for (int b = threadIdx.x; b < H_N * 256; b += SP_THREADS)
        sh[b / 256][b % 256] = 0;
    __syncthreads();
    run_acc rm = { -1, 0, 0 }, rc = { -1, 0, 0 };
    for (int j = 0; j < SP_PER_THREAD; j++) {
        const int64_t i = strided_id(t, j);
        if (i >= t.c.V)
            break;
        const float p = prob_of(xform(t.c, i), m);
        const uint32_t key = __float_as_uint(p);
        const int bin = (key >> shift) & 255;
        if (mass_on && (key & mask) == pre_m)
            run_add(rm, bin, fixq(p), sh[H_MASS], sh[H_MASS_CNT]);
        if ((key & mask) == pre_c)
            run_add(rc, bin, 1, sh[H_COUNT], NULL);
    }
    run_flush(rm, sh[H_MASS], sh[H_MASS_CNT]);
    run_flush(rc, sh[H_COUNT], NULL);
    __syncthreads();
    for (int b = threadIdx.x; b < H_N * 256; b += SP_THREADS) {
        const unsigned long long v = sh[b / 256][b % 256];
        if (v)
            atomicAdd(&st->hist[pass][b / 256][b % 256], v);
    }
}

// One warp walks a histogram from the top bin: the first bin b whose weight from the top
// (inclusive) reaches target (bin 0 if none); returns b, *above = the weight of the bins
// above it, *cnt_above the same over `counts` (may be NULL).
__device__ int warp_walk(const unsigned long long *w, const unsigned long long *counts, unsigned long long target,
                         unsigned long long *above, unsigned long long *cnt_above)
{
    const int lane = threadIdx.x & 31;
    // lane l owns bins 255 - 8l down to 248 - 8l
    unsigned long long s = 0, sc = 0;
    for (int k = 0; k < 8; k++) {
        s += ld(&w[255 - 8 * lane - k]);
        if (counts)
            sc += ld(&counts[255 - 8 * lane - k]);
    }
    unsigned long long incl = s, inclc = sc;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long n = __shfl_up_sync(0xffffffffu, incl, o);
        const unsigned long long nc = __shfl_up_sync(0xffffffffu, inclc, o);
        if (lane >= o)
            incl += n, inclc += nc;
    }
    const unsigned int hit = __ballot_sync(0xffffffffu, incl >= target);
    const int owner = hit ? __ffs(hit) - 1 : 31;
    int bin = 0;
    unsigned long long acc = 0, accc = 0;
    if (lane == owner) {
        acc = incl - s, accc = inclc - sc;
        bin = 0;
        for (int k = 0; k < 8; k++) {
            const int b = 255 - 8 * lane - k;
            const unsigned long long wb = ld(&w[b]);
            if (b == 0 || acc + wb >= target) {
                bin = b;
                break;
            }
            acc += wb;
            if (counts)
                accc += ld(&counts[b]);
        }
    }
    bin = __shfl_sync(0xffffffffu, bin, owner);
    *above = __shfl_sync(0xffffffffu, acc, owner);
    *cnt_above = __shfl_sync(0xffffffffu, accc, owner);
    return bin;
}

// The row's last CTA of a radix launch: each selection's walk of pass `pass` (warp 0 the
// mass selection, warp 1 the count selection), then after the last pass the kept prefix.
__device__ void radix_walk(const cta &t, int pass)
{
    struct sp_row *st = t.st;
    const int warp = threadIdx.x >> 5, shift = 24 - 8 * pass;
    if (warp == SEL_MASS && st->mass_on) {
        unsigned long long above, cnt;
        const int b = warp_walk(st->hist[pass][H_MASS], st->hist[pass][H_MASS_CNT], st->target[SEL_MASS], &above, &cnt);
        if ((threadIdx.x & 31) == 0) {
            st->target[SEL_MASS] -= above;
            st->above[SEL_MASS] += above;
            st->cnt_above += cnt;
            st->prefix[SEL_MASS] |= (uint32_t)b << shift;
        }
    } else if (warp == SEL_COUNT) {
        unsigned long long above, cnt;
        const int b = warp_walk(st->hist[pass][H_COUNT], NULL, st->target[SEL_COUNT], &above, &cnt);
        if ((threadIdx.x & 31) == 0) {
            st->target[SEL_COUNT] -= above;
            st->above[SEL_COUNT] += above;
            st->prefix[SEL_COUNT] |= (uint32_t)b << shift;
        }
    }
    __syncthreads();
    if (pass < SP_PASSES - 1 || threadIdx.x != 0)
        return;
    // the kept prefix: n = min(n0, the top-p prefix); its last element's key and ties
    unsigned long long n = st->n0;
    st->K = st->prefix[SEL_COUNT];
    st->need_ties = n - st->above[SEL_COUNT];
    if (st->mass_on) {
        const uint32_t K = st->prefix[SEL_MASS];
        const unsigned long long qk = fixq(__uint_as_float(K));
        const unsigned long long ties = qk ? (st->target0 - st->above[SEL_MASS] + qk - 1) / qk : 1;
        if (st->cnt_above + ties < n) {
            n = st->cnt_above + ties;
            st->K = K;
            st->need_ties = ties;
        }
    }
}

// ---- the six launches --------------------------------------------------------------------

__global__ void __launch_bounds__(SP_THREADS) sample_max_kernel(const sample_args a)
{
    __shared__ arg sh_arg[SP_WARPS + 1];
    __shared__ float sh_f[SP_WARPS + 1];
    __shared__ int sh_flag;
    const cta t = cta_setup(a);
    float m = -INFINITY, mr = -INFINITY;
    arg best = { NAN, a.V };
    float raw[SP_PER_THREAD];
    for (int j = 0; j < SP_PER_THREAD; j++) {
        const int64_t i = strided_id(t, j);
        raw[j] = NAN;
        if (i >= a.V)
            continue;
        const float x = xform(t.c, i);
        if (better(x, i, best.v, best.i))
            best = { x, i };
        if (x > m)
            m = x;
        raw[j] = t.c.raw[i];
        if (raw[j] > mr)
            mr = raw[j];
    }
    m = block_max<SP_WARPS>(m, sh_f);
    mr = block_max<SP_WARPS>(mr, sh_f);
    best = block_argmax<SP_WARPS>(best, sh_arg);
    struct sp_part *p = &t.part[t.slice];
    const int k = t.r.n_top < DSD_SAMPLE_MAX_TOP ? (t.r.n_top < a.V ? t.r.n_top : (int)a.V) : DSD_SAMPLE_MAX_TOP;
    // the slice's k largest raw logits, by successive arg-max below the previous one
    arg prev = { INFINITY, -1 };
    for (int q = 0; q < k; q++) {
        arg b = { NAN, INT64_MAX };
        for (int j = 0; j < SP_PER_THREAD; j++) {
            const int64_t i = strided_id(t, j);
            if (i < a.V && (q == 0 || better(prev.v, prev.i, raw[j], i)) && better(raw[j], i, b.v, b.i))
                b = { raw[j], i };
        }
        b = block_argmax<SP_WARPS>(b, sh_arg);
        if (threadIdx.x == 0)
            p->top[q] = b;
        prev = b;
    }
    if (threadIdx.x == 0) {
        p->m = m;
        p->raw_max = mr;
        p->best = best;
    }
    if (!last_of_row(t, 0, &sh_flag) || threadIdx.x != 0)
        return;
    struct sp_row *st = t.st;
    for (int s = 0; s < t.n_slices; s++) {
        const float ms = ld(&t.part[s].m), mrs = ld(&t.part[s].raw_max);
        const arg bs = ld_arg(&t.part[s].best);
        if (s == 0 || ms > m)
            m = ms;
        if (s == 0 || mrs > mr)
            mr = mrs;
        if (s == 0 || better(bs.v, bs.i, best.v, best.i))
            best = bs;
    }
    st->m = m, st->raw_max = mr, st->best = best;
    st->status = isfinite(best.v) ? DSD_SAMPLE_OK : DSD_SAMPLE_NONFINITE;
    st->mass_on = t.r.top_p < 1.0f;
    if (t.r.temperature == 0.0f || m == -INFINITY) {
        // greedy, or nothing has mass (as the reference: the arg-max)
        st->pick = best.i < a.V ? best.i : 0;
        st->decided = 1;
    }
}

__global__ void __launch_bounds__(SP_THREADS) sample_mass_kernel(const sample_args a)
{
    __shared__ unsigned long long sh_hist[H_N][256];
    __shared__ unsigned long long sh_u[SP_WARPS + 1];
    __shared__ double sh_d[SP_WARPS + 1];
    __shared__ int sh_flag;
    const cta t = cta_setup(a);
    struct sp_row *st = t.st;
    const bool decided = ld(&st->decided);
    struct sp_part *p = &t.part[t.slice];
    if (!decided) {
        const float m = ld(&st->m);
        unsigned long long zq = 0, n_minp = 0;
        for (int j = 0; j < SP_PER_THREAD; j++) {
            const int64_t i = strided_id(t, j);
            if (i >= a.V)
                break;
            const float pr = prob_of(xform(t.c, i), m);
            zq += fixq(pr);
            n_minp += !(t.r.min_p > 0.0f && pr < t.r.min_p);
        }
        zq = block_sum<SP_WARPS>(zq, sh_u);
        n_minp = block_sum<SP_WARPS>(n_minp, sh_u);
        if (threadIdx.x == 0)
            p->zq = zq, p->n_minp = n_minp;
        radix_pass(t, 0, sh_hist);
    }
    if (t.r.n_top >= 0) {
        const double mr = (double)ld(&st->raw_max);
        double z = 0.0;
        for (int j = 0; j < SP_PER_THREAD; j++) {
            const int64_t i = strided_id(t, j);
            if (i >= a.V)
                break;
            z += exp((double)t.c.raw[i] - mr);
        }
        z = block_sum<SP_WARPS>(z, sh_d);
        if (threadIdx.x == 0)
            p->z = z;
    }
    if (!last_of_row(t, 1, &sh_flag))
        return;
    if (threadIdx.x == 0) {
        double z = 0.0;
        unsigned long long zq = 0, n_minp = 0;
        for (int s = 0; s < t.n_slices; s++) {
            if (t.r.n_top >= 0)
                z += ld(&t.part[s].z);
            if (!decided)
                zq += ld(&t.part[s].zq), n_minp += ld(&t.part[s].n_minp);
        }
        st->z = z;
        st->zq = zq;
        if (!decided) {
            unsigned long long n = t.r.top_k > 0 && t.r.top_k < a.V ? (unsigned long long)t.r.top_k
                                                                    : (unsigned long long)a.V;
            if (n_minp < n)
                n = n_minp;
            st->n0 = n;
            st->target[SEL_COUNT] = n;
            if (n == 0) {
                st->pick = st->best.i < a.V ? st->best.i : 0;
                st->decided = 1;
            } else if (st->mass_on) {
                // the shortest prefix whose mass reaches top_p Z
                unsigned long long target = (unsigned long long)ceil((double)t.r.top_p * (double)zq);
                if (target < 1)
                    target = 1;
                st->target0 = st->target[SEL_MASS] = target;
            }
        }
    }
    __syncthreads();
    if (!ld(&st->decided))
        radix_walk(t, 0);
}

__global__ void __launch_bounds__(SP_THREADS) sample_radix_kernel(const sample_args a, int pass)
{
    __shared__ unsigned long long sh_hist[H_N][256];
    __shared__ int sh_flag;
    const cta t = cta_setup(a);
    struct sp_row *st = t.st;
    if (ld(&st->decided))
        return;
    radix_pass(t, pass, sh_hist);
    if (!last_of_row(t, 1 + pass, &sh_flag))
        return;
    radix_walk(t, pass);
}

__global__ void __launch_bounds__(SP_THREADS) sample_draw_kernel(const sample_args a)
{
    __shared__ arg sh_arg[SP_WARPS + 1];
    __shared__ unsigned long long sh_u[33];
    __shared__ long long sh_l[SP_WARPS + 1];
    __shared__ int64_t sh_pick;
    __shared__ int sh_flag;
    const cta t = cta_setup(a);
    struct sp_row *st = t.st;
    const bool decided = ld(&st->decided);
    const float m = ld(&st->m);
    const uint32_t K = ld(&st->K);
    struct sp_part *p = &t.part[t.slice];
    if (!decided) {
        unsigned long long ties = 0, mass = 0;
        long long last = -1;
        for (int j = 0; j < SP_PER_THREAD; j++) {
            const int64_t i = strided_id(t, j);
            if (i >= a.V)
                break;
            const float pr = prob_of(xform(t.c, i), m);
            const uint32_t key = __float_as_uint(pr);
            ties += key == K;
            if (key > K) {
                mass += fixq(pr);
                last = i;
            }
        }
        ties = block_sum<SP_WARPS>(ties, sh_u);
        mass = block_sum<SP_WARPS>(mass, sh_u);
        last = block_reduce<SP_WARPS>(last, sh_l, op_max_ll(), -1ll);
        if (threadIdx.x == 0)
            p->ties = ties, p->mass_above = mass, p->last_above = last;
    }
    if (!last_of_row(t, SP_LAUNCHES - 1, &sh_flag))
        return;
    int64_t pick;
    if (decided) {
        pick = ld(&st->pick);
    } else {
        // the last kept tie: the need_ties-th id with key K in ascending order
        const unsigned long long need = ld(&st->need_ties);
        unsigned long long before = 0;
        int ts = 0;
        for (; ts < t.n_slices - 1; ts++) {
            const unsigned long long n = ld(&t.part[ts].ties);
            if (before + n >= need)
                break;
            before += n;
        }
        // thread t owns ids ti0 + t * SP_PER_THREAD ... (+SP_PER_THREAD), within V
        const int64_t ti0 = (int64_t)ts * SP_SLICE + (int64_t)threadIdx.x * SP_PER_THREAD;
        const int64_t ti1 = ti0 + SP_PER_THREAD < a.V ? ti0 + SP_PER_THREAD : a.V;
        const unsigned long long my = ti0 < a.V ? count_key(t.c, m, K, ti0, ti1) : 0;
        unsigned long long total;
        const unsigned long long mb = before + block_exclusive_scan<SP_WARPS>(my, sh_u, &total);
        if (threadIdx.x == 0)
            sh_pick = a.V;
        __syncthreads();
        if (mb < need && mb + my >= need)
            sh_pick = nth_key(t.c, m, K, ti0, ti1, mb, need);
        __syncthreads();
        const int64_t tie_last = sh_pick;
        __syncthreads();
        // the kept mass (every kept tie weighs fixq(K)), then the slice where u times it falls
        const unsigned long long qk = fixq(__uint_as_float(K));
        unsigned long long kept = 0;
        int64_t last_kept = tie_last < a.V ? tie_last : -1;
        for (int s = 0; s < t.n_slices; s++) {
            kept += ld(&t.part[s].mass_above);
            const int64_t la = ld(&t.part[s].last_above);
            if (la > last_kept)
                last_kept = la;
        }
        kept += need * qk;
        const double rr = (double)t.r.u * (double)kept;
        unsigned long long mbefore = 0, ties_before = 0;
        int ds = -1;
        for (int s = 0; s < t.n_slices; s++) {
            const unsigned long long n = ld(&t.part[s].ties);
            const unsigned long long tk = ties_before >= need ? 0 : (need - ties_before < n ? need - ties_before : n);
            const unsigned long long ks = ld(&t.part[s].mass_above) + tk * qk;
            ties_before += n;
            if (ks > 0 && (double)mbefore <= rr && rr < (double)(mbefore + ks)) {
                ds = s;
                break;
            }
            mbefore += ks;
        }
        pick = -1;
        if (ds >= 0) {
            const int64_t di0 = (int64_t)ds * SP_SLICE + (int64_t)threadIdx.x * SP_PER_THREAD;
            const int64_t di1 = di0 + SP_PER_THREAD < a.V ? di0 + SP_PER_THREAD : a.V;
            const unsigned long long mm = di0 < a.V ? kept_mass(t.c, m, K, tie_last, di0, di1) : 0;
            unsigned long long tot;
            const unsigned long long mb2 = mbefore + block_exclusive_scan<SP_WARPS>(mm, sh_u, &tot);
            if (threadIdx.x == 0)
                sh_pick = -1;
            __syncthreads();
            if (mm > 0 && (double)mb2 <= rr && rr < (double)(mb2 + mm))
                sh_pick = draw_in(t.c, m, K, tie_last, di0, di1, mb2, rr);
            __syncthreads();
            pick = sh_pick;
        }
        if (pick < 0) {
            // u * kept at the very end (rounding): the last kept id, as the reference
            const arg b = ld_arg(&st->best);
            pick = last_kept >= 0 ? last_kept : (b.i < a.V ? b.i : 0);
        }
    }
    struct dsd_sample_result *o = &a.out[blockIdx.y];
    if (t.r.n_top >= 0) {
        // raw logprobs: the log-sum-exp of the slices' sums (in slice order), the top n of
        // the slices' candidates
        const double lse = (double)ld(&st->raw_max) + log(ld(&st->z));
        if (threadIdx.x == 0)
            o->logprob = (float)fmax((double)t.c.raw[pick] - lse, -1e30);
        const int k = t.r.n_top < DSD_SAMPLE_MAX_TOP ? (t.r.n_top < a.V ? t.r.n_top : (int)a.V) : DSD_SAMPLE_MAX_TOP;
        arg prev = { INFINITY, -1 };
        for (int q = 0; q < k; q++) {
            arg b = { NAN, INT64_MAX };
            for (int c = threadIdx.x; c < t.n_slices * k; c += SP_THREADS) {
                const arg v = ld_arg(&t.part[c / k].top[c % k]);
                if (v.i < a.V && (q == 0 || better(prev.v, prev.i, v.v, v.i)) && better(v.v, v.i, b.v, b.i))
                    b = v;
            }
            b = block_argmax<SP_WARPS>(b, sh_arg);
            if (threadIdx.x == 0) {
                o->top_ids[q] = (int32_t)b.i;
                o->top_logprobs[q] = (float)fmax((double)b.v - lse, -1e30);
            }
            prev = b;
        }
        if (threadIdx.x == 0)
            for (int q = k; q < DSD_SAMPLE_MAX_TOP; q++) {
                o->top_ids[q] = -1;
                o->top_logprobs[q] = 0.0f;
            }
    } else if (threadIdx.x == 0) {
        o->logprob = 0.0f;
        for (int q = 0; q < DSD_SAMPLE_MAX_TOP; q++) {
            o->top_ids[q] = -1;
            o->top_logprobs[q] = 0.0f;
        }
    }
    if (threadIdx.x == 0) {
        o->token = (int32_t)pick;
        o->status = ld(&st->status);
        count_pick(a.pen, t.r, a.V, pick);
    }
}

} // namespace

extern "C" {

void cuda_sample_slices(struct cuda_backend *cb, struct dsd_sample_result *out, const float *logits,
                        const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab)
{
    const int slices = (int)((vocab + SP_SLICE - 1) / SP_SLICE);
    const size_t st_bytes = (size_t)n_rows * sizeof(struct sp_row);
    const size_t part_bytes = (size_t)n_rows * (size_t)slices * sizeof(struct sp_part);
    uint8_t *scr = (uint8_t *)cuda_scratch(cb, st_bytes + part_bytes);
    if (!scr)
        return;
    if (!CU_OK(cb, cudaMemsetAsync(scr, 0, st_bytes, cb->stream)))
        return;
    const sample_args a = { { out, logits, rows, pen, vocab }, (struct sp_row *)scr,
                            (struct sp_part *)(scr + st_bytes) };
    const dim3 grid((unsigned)slices, (unsigned)n_rows);
    sample_max_kernel<<<grid, SP_THREADS, 0, cb->stream>>>(a);
    sample_mass_kernel<<<grid, SP_THREADS, 0, cb->stream>>>(a);
    for (int pass = 1; pass < SP_PASSES; pass++)
        sample_radix_kernel<<<grid, SP_THREADS, 0, cb->stream>>>(a, pass);
    sample_draw_kernel<<<grid, SP_THREADS, 0, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

} // extern "C"
