/* cpu_kernels.c: which of the CPU kernel tables (cpu_kernels.h) this CPU runs. */
#include "backend/cpu_kernels.h"

/* one per build of cpu_kernels_isa.c (src/host/backend/meson.build) */
extern const cv_cpu_kernels cv_cpu_kernels_baseline;
#if defined(__x86_64__)
extern const cv_cpu_kernels cv_cpu_kernels_avx2, cv_cpu_kernels_avx512;

/* __builtin_cpu_supports also checks that the OS saves the wider registers */
static bool cpu_has(cv_cpu_isa isa) {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return isa == CV_ISA_BASELINE || (isa == CV_ISA_AVX2 && avx2) ||
           (isa == CV_ISA_AVX512 && avx2 && __builtin_cpu_supports("avx512f"));
}

const cv_cpu_kernels *cv_cpu_kernels_for(cv_cpu_isa isa) {
    static const cv_cpu_kernels *const tables[CV_ISA_COUNT] = {
        &cv_cpu_kernels_baseline, &cv_cpu_kernels_avx2, &cv_cpu_kernels_avx512};
    return isa >= 0 && isa < CV_ISA_COUNT && cpu_has(isa) ? tables[isa] : NULL;
}
#else
const cv_cpu_kernels *cv_cpu_kernels_for(cv_cpu_isa isa) {
    return isa == CV_ISA_BASELINE ? &cv_cpu_kernels_baseline : NULL;
}
#endif

const cv_cpu_kernels *cv_cpu_kernels_best(void) {
    for (int isa = CV_ISA_COUNT - 1; isa > CV_ISA_BASELINE; isa--) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (k) return k;
    }
    return cv_cpu_kernels_for(CV_ISA_BASELINE);
}
