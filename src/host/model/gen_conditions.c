/* gen_conditions.c: what a generation request asks for, read the same way by the
 * decoding loop (generate.c) and the writers of its files (gen_sink.c): the conditions
 * in their interleaved order (image i has condition i % R) and the format names. */
#include "cvae/generate.h"

const char *cv_gen_format_name(cv_gen_format f) {
    static const char *const names[CV_FMT_COUNT] = {"idx", "idx.gz", "npy", "png", "grid"};
    CV_ASSERT((unsigned)f < CV_FMT_COUNT);
    return names[f];
}

long long cv_gen_condition_count(const cv_gen_conditions *c) {
    return c->n_rows ? c->n_rows : c->n_classes;
}

int cv_gen_class_of(const cv_gen_conditions *c, long long i) {
    const long long R = cv_gen_condition_count(c);
    return c->labels ? c->labels[i % R] : c->classes[i % R];
}

long long cv_generate_count(const cv_generate_options *o) {
    return o->z ? o->z_rows : cv_gen_condition_count(&o->cond) * o->per;
}
