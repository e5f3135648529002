/* checkpoint.c: writing and validating model files (format in checkpoint.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cv_math.h"
#include "cvae/checkpoint.h"
#include "data/names.h"
#include "util/fileio.h"

#define MAGIC "CVAECKPT"
/* the header fields but the loss sums and the data shape, then the sums: 3 float64 in
 * version 1, 5 since; version 3 adds the channels and the condition kind (2 u32) */
#define FIELDS_BYTES_WITHOUT_SUMS (4 * (5 + CV_MAX_HIDDEN) + 3 * 4 + 8 + 8 + 4 + 4 + 4 + 4 + 8 + \
                                   4 + 4 + 4 + 8 + 4 + 4 + 8)
#define SUMS_V1 3
#define SUMS_V2 5
#define DATA_SHAPE_BYTES 8
#define OBJECTIVES_BYTES 24 /* version 4's block: 6 x 4 bytes */
#define HEADER_FIELDS_BYTES(version)                                                    \
    (FIELDS_BYTES_WITHOUT_SUMS + 8 * ((version) == 1 ? SUMS_V1 : SUMS_V2) +             \
     ((version) >= 3 ? DATA_SHAPE_BYTES : 0) + ((version) >= 4 ? OBJECTIVES_BYTES : 0))
#define PREFIX_BYTES (8 + 4 + 4)

_Static_assert(sizeof(cv_loss_sums) == SUMS_V2 * sizeof(double), "cv_loss_sums is 5 doubles");

typedef struct {
    uint8_t *p;
} writer;

static void put_u32(writer *w, uint32_t v) {
    for (int i = 0; i < 4; i++) *w->p++ = (uint8_t)(v >> (8 * i));
}
static void put_u64(writer *w, uint64_t v) {
    for (int i = 0; i < 8; i++) *w->p++ = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t **p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)(*p)[i] << (8 * i);
    *p += 4;
    return v;
}
static uint64_t get_u64(const uint8_t **p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 8;
    return v;
}
static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static double bits_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* ---- version 4: the training objectives' block (docs/design.md 4.1), after the data
 * shape: the objective, its draws, free bits' lambda, the per-step KL warm-up, a learned
 * sigma and the last test evaluation's active units. */
static void encode_objectives(const cv_checkpoint *ck, writer *w) {
    put_u32(w, (uint32_t)ck->train.objective);
    put_u32(w, (uint32_t)ck->train.samples);
    put_u32(w, f32_bits(ck->train.free_bits));
    put_u32(w, (uint32_t)ck->train.warmup_per_step);
    put_u32(w, ck->cfg.sigma_learned ? 1u : 0u);
    put_u32(w, (uint32_t)ck->active_units);
}

/* Before version 4: the ELBO, a KL warm-up held per epoch, a fixed sigma, no figure. */
static void decode_objectives(uint32_t version, const uint8_t **p, cv_checkpoint *ck) {
    ck->train.objective = CV_OBJECTIVE_ELBO;
    ck->train.samples = 1;
    ck->train.free_bits = 0.0f;
    ck->train.warmup_per_step = 0;
    ck->cfg.sigma_learned = false;
    ck->active_units = -1;
    if (version < 4) return;
    ck->train.objective = (int32_t)get_u32(p);
    ck->train.samples = (int32_t)get_u32(p);
    ck->train.free_bits = bits_f32(get_u32(p));
    ck->train.warmup_per_step = (int32_t)get_u32(p);
    ck->cfg.sigma_learned = get_u32(p) != 0;
    ck->active_units = (int32_t)get_u32(p);
}

/* The block's values make sense (a malformed file is refused, not trained on). */
static bool objectives_valid(const cv_checkpoint *ck) {
    const cv_train_config *t = &ck->train;
    return (t->objective == CV_OBJECTIVE_ELBO || t->objective == CV_OBJECTIVE_IWAE) &&
           t->samples >= 1 && (t->objective == CV_OBJECTIVE_IWAE || t->samples == 1) &&
           t->free_bits >= 0.0f && isfinite(t->free_bits) &&
           (t->warmup_per_step == 0 || t->warmup_per_step == 1) && ck->active_units >= -1 &&
           ck->active_units <= ck->cfg.latent;
}

static void encode_header(const cv_checkpoint *ck, uint8_t *buf) {
    writer w = {buf};
    memcpy(w.p, MAGIC, 8);
    w.p += 8;
    put_u32(&w, CV_CHECKPOINT_VERSION);
    put_u32(&w, HEADER_FIELDS_BYTES(CV_CHECKPOINT_VERSION));
    put_u32(&w, (uint32_t)ck->cfg.height);
    put_u32(&w, (uint32_t)ck->cfg.width);
    put_u32(&w, (uint32_t)ck->cfg.cond_width);
    put_u32(&w, (uint32_t)ck->cfg.latent);
    put_u32(&w, (uint32_t)ck->cfg.n_hidden);
    for (int i = 0; i < CV_MAX_HIDDEN; i++) put_u32(&w, (uint32_t)ck->cfg.hidden[i]);
    put_u32(&w, (uint32_t)ck->cfg.prior);
    put_u32(&w, (uint32_t)ck->cfg.likelihood);
    put_u32(&w, f32_bits(ck->cfg.sigma));
    put_u64(&w, ck->seed);
    put_u64(&w, (uint64_t)ck->step);
    put_u32(&w, (uint32_t)ck->epoch);
    put_u32(&w, (uint32_t)ck->batch);
    put_u32(&w, f32_bits(ck->lr));
    put_u32(&w, (uint32_t)ck->position);
    const double sums[SUMS_V2] = {ck->sums.rec, ck->sums.kl, ck->sums.rows, ck->sums.grad_norm,
                                  ck->sums.steps};
    for (int i = 0; i < SUMS_V2; i++) put_u64(&w, f64_bits(sums[i]));
    put_u64(&w, (uint64_t)ck->nonfinite_steps);
    put_u32(&w, f32_bits(ck->train.beta));
    put_u32(&w, (uint32_t)ck->train.kl_warmup);
    put_u32(&w, (uint32_t)ck->train.cosine);
    put_u64(&w, (uint64_t)ck->train.warmup_steps);
    put_u32(&w, f32_bits(ck->train.clip_norm));
    put_u32(&w, (uint32_t)ck->train.binarize);
    put_u32(&w, (uint32_t)ck->cfg.channels);
    put_u32(&w, (uint32_t)ck->cfg.condition);
    encode_objectives(ck, &w);
    put_u64(&w, (uint64_t)ck->n_params);
}

/* ---------- version 5: the names of the conditions ----------
 * After the three arrays, before the CRC: u32 count (0: no names, else K), then each name
 * as a u16 byte length (1..CV_NAME_MAX) and its bytes, without a NUL. The block is
 * self-contained: it adds nothing to the header, and versions 1 to 4 have none. */

#define NAMES_VERSION 5

static size_t names_block_bytes(const cv_checkpoint *ck) {
    size_t n = 4;
    for (int i = 0; ck->names && i < ck->cfg.cond_width; i++) n += 2 + strlen(ck->names[i]);
    return n;
}

static void encode_names(const cv_checkpoint *ck, uint8_t *out) {
    writer w = {out};
    const int count = ck->names ? ck->cfg.cond_width : 0;
    put_u32(&w, (uint32_t)count);
    for (int i = 0; i < count; i++) {
        const size_t len = strlen(ck->names[i]);
        CV_ASSERT(len >= 1 && len <= CV_NAME_MAX);
        *w.p++ = (uint8_t)len;
        *w.p++ = (uint8_t)(len >> 8);
        memcpy(w.p, ck->names[i], len);
        w.p += len;
    }
}

/* The block's size from its bytes (at most avail of them), before the CRC is checked. */
static cv_status names_block_size(const char *path, const uint8_t *p, size_t avail, int K,
                                  size_t *used, cv_err *err) {
    if (avail < 4) return cv_fail(err, CV_ERR_FORMAT, "%s: truncated checkpoint (no names)", path);
    const uint32_t count = get_u32(&p);
    if (count != 0 && count != (uint32_t)K)
        return cv_fail(err, CV_ERR_FORMAT, "%s: holds %u condition names for %d conditions",
                       path, count, K);
    *used = 4;
    for (uint32_t i = 0; i < count; i++) {
        if (avail - *used < 2)
            return cv_fail(err, CV_ERR_FORMAT, "%s: truncated checkpoint (in its names)", path);
        const size_t len = (size_t)p[0] | (size_t)p[1] << 8;
        if (len < 1 || len > CV_NAME_MAX || avail - *used - 2 < len)
            return cv_fail(err, CV_ERR_FORMAT, "%s: truncated or malformed condition name %u",
                           path, i);
        p += 2 + len;
        *used += 2 + len;
    }
    return CV_OK;
}

/* The names of a block whose size names_block_size found and whose CRC is right. */
static cv_status decode_names(const char *path, const uint8_t *p, char ***out, cv_err *err) {
    const uint32_t count = get_u32(&p);
    *out = NULL;
    if (!count) return CV_OK;
    char **names = calloc(count, sizeof *names);
    if (!names) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    cv_status st = CV_OK;
    for (uint32_t i = 0; i < count && !st; i++) {
        const size_t len = (size_t)p[0] | (size_t)p[1] << 8;
        names[i] = malloc(len + 1);
        if (!names[i]) {
            st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        memcpy(names[i], p + 2, len);
        names[i][len] = '\0';
        p += 2 + len;
        const char *why = strlen(names[i]) != len ? "it holds a NUL" : cv_name_problem(names[i]);
        if (why) st = cv_fail(err, CV_ERR_FORMAT, "%s: condition name %u is invalid: %s", path, i, why);
    }
    if (st) cv_names_release(names, (int)count);
    else *out = names;
    return st;
}

/* Float arrays are stored little-endian, which is every machine cvae builds for. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoint I/O assumes little-endian");

cv_status cv_checkpoint_save(const char *path, cv_checkpoint *ck, cv_err *err) {
    uint8_t header[PREFIX_BYTES + HEADER_FIELDS_BYTES(CV_CHECKPOINT_VERSION)];
    encode_header(ck, header);
    size_t bytes = ck->n_params * sizeof(float);
    uint32_t crc = (uint32_t)crc32(0L, header, sizeof header);
    const float *arrays[3] = {ck->params, ck->adam_m, ck->adam_v};
    for (int i = 0; i < 3; i++) crc = (uint32_t)crc32_z(crc, (const Bytef *)arrays[i], bytes);
    const size_t names_bytes = names_block_bytes(ck);
    uint8_t *names = malloc(names_bytes);
    if (!names) return cv_fail(err, CV_ERR_NOMEM, "out of memory for the checkpoint's names");
    encode_names(ck, names);
    crc = (uint32_t)crc32_z(crc, names, names_bytes);
    uint8_t trailer[4];
    writer w = {trailer};
    put_u32(&w, crc);

    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (!st) st = cv_outfile_write(&f, header, sizeof header, err);
    for (int i = 0; i < 3 && !st; i++) st = cv_outfile_write(&f, arrays[i], bytes, err);
    if (!st) st = cv_outfile_write(&f, names, names_bytes, err);
    if (!st) st = cv_outfile_write(&f, trailer, 4, err);
    free(names);
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    st = cv_outfile_commit(&f, err);
    if (!st) ck->checksum = crc;
    return st;
}

static cv_status parse(const char *path, const uint8_t *buf, size_t size, cv_checkpoint *ck,
                       cv_err *err) {
    if (size == 0) return cv_fail(err, CV_ERR_FORMAT, "%s: empty file, not a cvae checkpoint", path);
    if (memcmp(buf, MAGIC, size < 8 ? size : 8) != 0)
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a cvae checkpoint (bad magic)", path);
    if (size < PREFIX_BYTES)
        return cv_fail(err, CV_ERR_FORMAT, "%s: truncated checkpoint (%zu bytes; its first "
                       "fields alone take %d)", path, size, PREFIX_BYTES);
    const uint8_t *p = buf + 8;
    uint32_t version = get_u32(&p), fields = get_u32(&p);
    if (version < 1 || version > (uint32_t)CV_CHECKPOINT_VERSION)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: checkpoint version %u, this cvae reads versions 1 to %d", path,
                       version, CV_CHECKPOINT_VERSION);
    const int n_sums = version == 1 ? SUMS_V1 : SUMS_V2;
    const size_t hdr = PREFIX_BYTES + HEADER_FIELDS_BYTES(version);
    if (fields != (uint32_t)HEADER_FIELDS_BYTES(version) || size < hdr + 4)
        return cv_fail(err, CV_ERR_FORMAT, "%s: truncated or malformed checkpoint header",
                       path);
    cv_model_config *c = &ck->cfg;
    c->height = (int)get_u32(&p);
    c->width = (int)get_u32(&p);
    c->cond_width = (int)get_u32(&p);
    c->latent = (int)get_u32(&p);
    c->n_hidden = (int)get_u32(&p);
    for (int i = 0; i < CV_MAX_HIDDEN; i++) c->hidden[i] = (int)get_u32(&p);
    c->prior = (cv_prior_kind)get_u32(&p);
    c->likelihood = (cv_likelihood)get_u32(&p);
    c->sigma = bits_f32(get_u32(&p));
    ck->seed = get_u64(&p);
    ck->step = (int64_t)get_u64(&p);
    ck->epoch = (int32_t)get_u32(&p);
    ck->batch = (int32_t)get_u32(&p);
    ck->lr = bits_f32(get_u32(&p));
    ck->position = (int32_t)get_u32(&p);
    double sums[SUMS_V2] = {0}; /* a version 1 file leaves the gradient norms at 0 */
    for (int i = 0; i < n_sums; i++) sums[i] = bits_f64(get_u64(&p));
    ck->sums = (cv_loss_sums){sums[0], sums[1], sums[2], sums[3], sums[4]};
    ck->nonfinite_steps = (int64_t)get_u64(&p);
    ck->train.beta = bits_f32(get_u32(&p));
    ck->train.kl_warmup = (int32_t)get_u32(&p);
    ck->train.cosine = (int32_t)get_u32(&p);
    ck->train.warmup_steps = (int64_t)get_u64(&p);
    ck->train.clip_norm = bits_f32(get_u32(&p));
    ck->train.binarize = (int32_t)get_u32(&p);
    /* before version 3 every model was of grey images and class labels */
    c->channels = version >= 3 ? (int)get_u32(&p) : 1;
    c->condition = version >= 3 ? (cv_condition_kind)get_u32(&p) : CV_COND_LABELS;
    decode_objectives(version, &p, ck);
    uint64_t n_params = get_u64(&p);

    cv_layout lo;
    cv_err why;
    if (cv_layout_init(c, &lo, &why) != CV_OK)
        return cv_fail(err, CV_ERR_FORMAT, "%s: invalid model config: %s", path, why.msg);
    if (n_params != lo.n_params)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: holds %llu parameters but its config needs %zu", path,
                       (unsigned long long)n_params, lo.n_params);
    const uint64_t arrays_end = hdr + 3 * n_params * sizeof(float);
    size_t names_bytes = 0;
    if (version >= NAMES_VERSION && size >= arrays_end + 4) {
        cv_status st = names_block_size(path, buf + arrays_end, size - arrays_end - 4,
                                        c->cond_width, &names_bytes, err);
        if (st) return st;
    } else if (version >= NAMES_VERSION) {
        names_bytes = 4; /* at least the count: the size check below calls it truncated */
    }
    uint64_t expect = arrays_end + names_bytes + 4;
    if (size != expect)
        return cv_fail(err, CV_ERR_FORMAT, "%s: file is %zu bytes, expected %llu (%s)", path,
                       size, (unsigned long long)expect,
                       size < expect ? "truncated" : "trailing bytes");
    const uint8_t *tail = buf + size - 4;
    uint32_t stored = get_u32(&tail);
    uint32_t actual = (uint32_t)crc32_z(0L, buf, size - 4);
    if (stored != actual)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: checksum mismatch (stored %08x, computed %08x): corrupt file",
                       path, stored, actual);
    if (ck->step < 0 || ck->epoch < 0 || ck->batch < 1 || !(ck->lr > 0.0f) ||
        ck->position < 0 || ck->nonfinite_steps < 0 || !(ck->train.beta >= 0.0f) ||
        ck->train.kl_warmup < 0 || ck->train.warmup_steps < 0 || !(ck->train.clip_norm >= 0.0f) ||
        !objectives_valid(ck))
        return cv_fail(err, CV_ERR_FORMAT, "%s: invalid training state in header", path);
    size_t bytes = n_params * sizeof(float);
    float **arrays[3] = {&ck->params, &ck->adam_m, &ck->adam_v};
    for (int i = 0; i < 3; i++) {
        *arrays[i] = malloc(bytes ? bytes : 1);
        if (!*arrays[i]) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
        memcpy(*arrays[i], buf + hdr + i * bytes, bytes);
    }
    if (version >= NAMES_VERSION) {
        cv_status st = decode_names(path, buf + arrays_end, &ck->names, err);
        if (st) return st;
    }
    ck->n_params = n_params;
    ck->checksum = stored;
    ck->file_bytes = size;
    ck->version = version;
    return CV_OK;
}

/* A folder where a checkpoint was expected: most often the run folder that holds it. */
static cv_status folder_given(const char *path, cv_err *err) {
    char inside[4200];
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    snprintf(inside, sizeof inside, "%.*s/model.ckpt", (int)len, path);
    struct stat sb;
    if (stat(inside, &sb) == 0 && S_ISREG(sb.st_mode))
        return cv_fail(err, CV_ERR_IO, "%s: is a folder; give the checkpoint in it, %s", path,
                       inside);
    return cv_fail(err, CV_ERR_IO, "%s: is a folder, not a checkpoint (cvae train --out RUNDIR "
                   "writes RUNDIR/model.ckpt)", path);
}

cv_status cv_checkpoint_load(const char *path, cv_checkpoint *ck, cv_err *err) {
    memset(ck, 0, sizeof *ck);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return folder_given(path, err);
    if (!S_ISREG(sb.st_mode))
        return cv_fail(err, CV_ERR_IO, "%s: is not a regular file", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    cv_status st = CV_OK;
    if (!buf)
        st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
    else if (fread(buf, 1, size, fp) != size)
        st = cv_fail(err, CV_ERR_IO, "%s: read failed", path);
    fclose(fp);
    if (!st) st = parse(path, buf, size, ck, err);
    free(buf);
    if (st) cv_checkpoint_free(ck);
    return st;
}

void cv_checkpoint_free(cv_checkpoint *ck) {
    free(ck->params);
    free(ck->adam_m);
    free(ck->adam_v);
    ck->params = ck->adam_m = ck->adam_v = NULL;
    cv_names_release(ck->names, ck->cfg.cond_width);
    ck->names = NULL;
}

cv_status cv_checkpoint_from_model(const cv_model *m, cv_checkpoint *ck, cv_err *err) {
    ck->cfg = m->layout.cfg;
    ck->n_params = m->layout.n_params;
    size_t bytes = ck->n_params * sizeof(float);
    float **arrays[3] = {&ck->params, &ck->adam_m, &ck->adam_v};
    const float *src[3] = {m->params, m->adam_m, m->adam_v};
    for (int i = 0; i < 3; i++) {
        *arrays[i] = malloc(bytes);
        if (!*arrays[i]) {
            cv_checkpoint_free(ck);
            return cv_fail(err, CV_ERR_NOMEM, "out of host memory for the checkpoint");
        }
        m->be->download(m->be, *arrays[i], src[i], bytes);
    }
    return CV_OK;
}

void cv_checkpoint_to_model(const cv_checkpoint *ck, cv_model *m) {
    CV_ASSERT(ck->n_params == m->layout.n_params);
    size_t bytes = ck->n_params * sizeof(float);
    m->be->upload(m->be, m->params, ck->params, bytes);
    m->be->upload(m->be, m->adam_m, ck->adam_m, bytes);
    m->be->upload(m->be, m->adam_v, ck->adam_v, bytes);
    m->be->zero(m->be, m->grads, bytes);
}

double cv_checkpoint_sigma(const cv_checkpoint *ck) {
    if (ck->cfg.likelihood != CV_LIKELIHOOD_GAUSSIAN) return NAN;
    cv_layout lo;
    cv_err err;
    if (cv_layout_init(&ck->cfg, &lo, &err)) return NAN;
    if (lo.log_sigma == CV_NO_COND) return ck->cfg.sigma;
    const double v = 2.0 * ck->params[lo.log_sigma];
    return exp(0.5 * (v < CV_LOGVAR_MIN ? CV_LOGVAR_MIN : v > CV_LOGVAR_MAX ? CV_LOGVAR_MAX : v));
}

cv_status cv_model_from_checkpoint(cv_backend *be, const cv_checkpoint *ck, cv_model *m,
                                   cv_err *err) {
    cv_status st = cv_model_create(be, &ck->cfg, m, err);
    if (st) return st;
    cv_checkpoint_to_model(ck, m);
    return CV_OK;
}
