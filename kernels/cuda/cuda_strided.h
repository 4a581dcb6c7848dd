// kernels/cuda/cuda_strided.h: a block-strided loop with several loads in flight per thread.
// CUDA C++ only.
//
// A plain loop `for (i = first; i < n; i += stride) use(i, load(i))` keeps one load in flight
// per thread; when one block walks a whole row (a decode step's norms, a selection's -1 scan,
// a logits row) that is a chain of dependent memory latencies. strided_pass issues the loads
// of U visits before the first use. Each thread visits the same ids in the same order as the
// plain loop, so any per-thread sum comes out bitwise the same.
#ifndef DSD_CUDA_STRIDED_H
#define DSD_CUDA_STRIDED_H

template <int U, typename Load, typename Use>
__device__ __forceinline__ void strided_pass(int first, int n, int stride, Load load, Use use)
{
    using T = decltype(load(0));
    for (int base = first; base < n; base += stride * U) {
        T v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = base + u * stride;
            v[u] = i < n ? load(i) : T{};
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = base + u * stride;
            if (i < n)
                use(i, v[u]);
        }
    }
}

#endif
