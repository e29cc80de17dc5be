// GPU burn-in kernels, compiled on the node by NVRTC (no headers). Every formula here has a
// twin in measure.rs (`mix64`, `splitmix`, `Pattern::word`, `gemm_input`, `words_hash`), so
// what a GPU wrote can be checked on the host. Loops are grid-stride: any grid covers any n.

#define GOLDEN 0x9E3779B97F4A7C15ULL

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned long long splitmix(unsigned long long seed,
                                                       unsigned long long index) {
    return mix64(seed + (index + 1ULL) * GOLDEN);
}

// kind: 0 walking ones, 1 walking zeros (param = shift), 2 random (param = seed), 3 own address.
__device__ __forceinline__ unsigned long long pattern_word(unsigned int kind,
                                                           unsigned long long param,
                                                           unsigned long long index,
                                                           unsigned long long address) {
    switch (kind) {
    case 0: return 1ULL << ((index + param) & 63ULL);
    case 1: return ~(1ULL << ((index + param) & 63ULL));
    case 2: return splitmix(param, index);
    default: return address;
    }
}

__device__ __forceinline__ unsigned long long first_thread() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long thread_count() {
    return (unsigned long long)gridDim.x * blockDim.x;
}

// buf holds words first .. first + n of the whole test.
extern "C" __global__ void pattern_write(unsigned long long *buf, unsigned long long n,
                                         unsigned long long first, unsigned int kind,
                                         unsigned long long param) {
    for (unsigned long long j = first_thread(); j < n; j += thread_count()) {
        buf[j] = pattern_word(kind, param, first + j, (unsigned long long)(buf + j));
    }
}

// Counts wrong words in *bad; the first bad_at_len of them leave (address, got ^ want) pairs.
extern "C" __global__ void pattern_verify(const unsigned long long *buf, unsigned long long n,
                                          unsigned long long first, unsigned int kind,
                                          unsigned long long param, unsigned long long *bad,
                                          unsigned long long *bad_at, unsigned int bad_at_len) {
    for (unsigned long long j = first_thread(); j < n; j += thread_count()) {
        unsigned long long address = (unsigned long long)(buf + j);
        unsigned long long want = pattern_word(kind, param, first + j, address);
        unsigned long long got = buf[j];
        if (got != want) {
            unsigned long long k = atomicAdd(bad, 1ULL);
            if (k < bad_at_len) {
                bad_at[2 * k] = address;
                bad_at[2 * k + 1] = got ^ want;
            }
        }
    }
}

// bf16 bits: a random sign and a magnitude in [0.5, 1), from integers only.
extern "C" __global__ void fill_bf16(unsigned short *out, unsigned long long n,
                                     unsigned long long seed) {
    for (unsigned long long j = first_thread(); j < n; j += thread_count()) {
        unsigned long long r = splitmix(seed, j);
        out[j] = (unsigned short)(((r >> 63) << 15) | 0x3F00ULL | (r & 0x7FULL));
    }
}

// Adds the number of 32-bit words where a and b differ to *count.
extern "C" __global__ void words_differ(const unsigned int *a, const unsigned int *b,
                                        unsigned long long n, unsigned long long *count) {
    unsigned long long mine = 0;
    for (unsigned long long j = first_thread(); j < n; j += thread_count()) {
        mine += (a[j] != b[j]);
    }
    if (mine != 0) {
        atomicAdd(count, mine);
    }
}

// After one product's words_differ: counts the product as a mismatch if any word differed,
// keeps the total of differing words, and clears the per-product count. One thread.
extern "C" __global__ void tally(unsigned long long *count, unsigned long long *products,
                                 unsigned long long *words) {
    if (*count != 0) {
        *products += 1ULL;
        *words += *count;
        *count = 0ULL;
    }
}

// Order-independent hash of a result: the wrapping sum of mix64((index << 32) ^ word).
extern "C" __global__ void words_hash(const unsigned int *a, unsigned long long n,
                                      unsigned long long *sum) {
    unsigned long long mine = 0;
    for (unsigned long long j = first_thread(); j < n; j += thread_count()) {
        mine += mix64((j << 32) ^ (unsigned long long)a[j]);
    }
    atomicAdd(sum, mine);
}
