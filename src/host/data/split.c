/* split.c: what a loaded split and data set offer whatever files they came from: their
 * image size, test-set binarization, and freeing them (a mapping unmapped, arrays freed). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cv_math.h"
#include "cvae/data.h"
#include "cvae/rng.h"
#include "data/names.h"

int cv_split_dim(const cv_split *s) { return s->h * s->w * s->channels; }

void cv_split_free(cv_split *s) {
    if (s->mapping) {
        munmap(s->mapping, s->mapping_bytes);
    } else {
        free(s->pixels);
        free(s->fpixels);
    }
    free(s->labels);
    free(s->conditions);
    memset(s, 0, sizeof *s);
}

void cv_data_free(cv_data *d) {
    cv_split_free(&d->train);
    cv_split_free(&d->test);
    cv_names_release(d->names, d->n_names);
    d->names = NULL;
    d->n_names = 0;
}

void cv_split_binarize(cv_split *s) {
    size_t n = (size_t)s->n * (size_t)cv_split_dim(s);
    for (size_t i = 0; i < n; i++) {
        float u = cv_philox_uniform(CV_BINARIZE_TEST_SEED, CV_STREAM_BINARIZE_TEST, i);
        if (s->pixels)
            s->pixels[i] = cv_bernoulli(u, (float)s->pixels[i] / 255.0f) ? 255 : 0;
        else
            s->fpixels[i] = cv_bernoulli(u, s->fpixels[i]) ? 1.0f : 0.0f;
    }
}
