/* One thread's AVX-512 FMA peak: 16 independent vfmadd231ps chains (enough to cover FMA latency on two
 * ports), 200 M iterations. Used for the "% of peak" column of docs/benchmarks.md.
 * Run: gcc -O3 -march=native benches/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

int main(void) {
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps(i * 0.001f);
    const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
    const long n = 200000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long it = 0; it < n; it++)
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    float sink = 0;
    for (int i = 0; i < 16; i++) sink += _mm512_reduce_add_ps(acc[i]);
    printf("%.1f GFLOP/s (checksum %f)\n", n * 16.0 * 32 / s / 1e9, sink);
    return 0;
}
