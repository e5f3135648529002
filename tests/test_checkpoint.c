/* test_checkpoint.c: round trip, and rejection of every kind of damaged checkpoint. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cvae/checkpoint.h"
#include "data/names.h"
#include "util/fileio.h"
#include "helpers.h"

static char *dir;
static char path[4200];
static cv_checkpoint saved;

static void setup(void) {
    dir = test_tmpdir();
    snprintf(path, sizeof path, "%s/model.ckpt", dir);
    test_rng r = test_rng_new("checkpoint");
    cv_model_config cfg = {.height = 5, .width = 7, .channels = 1, .cond_width = 3, .latent = 4,
                           .n_hidden = 2, .hidden = {9, 6}};
    cv_layout lo;
    cv_err err;
    cr_assert_eq(cv_layout_init(&cfg, &lo, &err), CV_OK);
    memset(&saved, 0, sizeof saved);
    saved.cfg = cfg;
    saved.seed = r.s;
    saved.step = 12345;
    saved.epoch = 7;
    saved.batch = 64;
    saved.lr = 2.5e-4f;
    saved.position = 4096;
    saved.sums = (cv_loss_sums){.rec = test_uniform(&r, 1e5, 1e6), .kl = test_uniform(&r, 1e3, 1e4),
                                .rows = 4096, .grad_norm = test_uniform(&r, 10, 100), .steps = 32};
    saved.train = (cv_train_config){.beta = 1.0f, .objective = CV_OBJECTIVE_IWAE,
                                    .samples = 2 + (int)test_uniform(&r, 0, 50),
                                    .free_bits = (float)test_uniform(&r, 0, 1),
                                    .warmup_per_step = 1};
    saved.active_units = 1 + (int)test_uniform(&r, 0, 3);
    saved.n_params = lo.n_params;
    saved.params = malloc(lo.n_params * 4);
    saved.adam_m = malloc(lo.n_params * 4);
    saved.adam_v = malloc(lo.n_params * 4);
    test_fill(&r, saved.params, lo.n_params, -1, 1);
    test_fill(&r, saved.adam_m, lo.n_params, -1, 1);
    test_fill(&r, saved.adam_v, lo.n_params, 0, 1);
    cr_assert_eq(cv_checkpoint_save(path, &saved, &err), CV_OK, "%s", err.msg);
}

static void teardown(void) {
    cv_checkpoint_free(&saved);
    test_rmtree(dir);
    free(dir);
}

TestSuite(checkpoint, .init = setup, .fini = teardown);

Test(checkpoint, round_trip) {
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(path, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert(memcmp(&ck.cfg, &saved.cfg, sizeof ck.cfg) == 0);
    cr_assert(ck.seed == saved.seed && ck.step == saved.step && ck.epoch == saved.epoch &&
              ck.batch == saved.batch && ck.lr == saved.lr && ck.n_params == saved.n_params);
    cr_assert(ck.position == saved.position && ck.version == CV_CHECKPOINT_VERSION);
    cr_assert(memcmp(&ck.train, &saved.train, sizeof ck.train) == 0 &&
              ck.active_units == saved.active_units, "the objectives' block did not survive");
    cr_assert(memcmp(&ck.sums, &saved.sums, sizeof ck.sums) == 0,
              "the loss sums did not survive: rec %g kl %g rows %g grad_norm %g steps %g",
              ck.sums.rec, ck.sums.kl, ck.sums.rows, ck.sums.grad_norm, ck.sums.steps);
    size_t bytes = saved.n_params * 4;
    cr_assert(memcmp(ck.params, saved.params, bytes) == 0);
    cr_assert(memcmp(ck.adam_m, saved.adam_m, bytes) == 0);
    cr_assert(memcmp(ck.adam_v, saved.adam_v, bytes) == 0);
    cr_assert_eq(ck.checksum, saved.checksum);
    cv_checkpoint_free(&ck);
    /* nothing but the checkpoint is left in the folder: the temporary was renamed */
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s/model.ckpt.tmp.%d", dir, (int)getpid());
    cr_assert(!cv_path_exists(tmp));
}

static void expect_reject(const uint8_t *bytes, size_t size, const char *needle) {
    test_write_file(path, bytes, size);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_neq(cv_checkpoint_load(path, &ck, &err), CV_OK, "damaged checkpoint accepted");
    cr_assert(strstr(err.msg, needle) != NULL, "expected '%s' in: %s", needle, err.msg);
    cr_assert(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    cr_assert_null(ck.params);
}

/* Rewrites the trailing CRC so that a header edit reaches the checks behind it. */
static void fix_crc(uint8_t *b, size_t size) {
    uint32_t c = (uint32_t)crc32(0L, b, (uInt)(size - 4));
    for (int i = 0; i < 4; i++) b[size - 4 + i] = (uint8_t)(c >> (8 * i));
}

Test(checkpoint, rejects_flipped_bits_anywhere) {
    test_rng r = test_rng_new("bit flips");
    size_t size;
    uint8_t *pristine = test_read_file(path, &size), *b = malloc(size);
    for (int t = 0; t < 40; t++) {
        memcpy(b, pristine, size);
        size_t at = (size_t)test_uniform(&r, 0, (double)size);
        b[at] ^= (uint8_t)(1u << (int)test_uniform(&r, 0, 8));
        test_write_file(path, b, size);
        cv_checkpoint ck;
        cv_err err;
        cr_assert_neq(cv_checkpoint_load(path, &ck, &err), CV_OK, "flip at byte %zu accepted", at);
    }
    memcpy(b, pristine, size);
    b[size / 2] ^= 0x10;
    expect_reject(b, size, "checksum mismatch");
    free(b);
    free(pristine);
}

Test(checkpoint, rejects_truncation_and_trailing_bytes) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    expect_reject(b, size - 1, "truncated");
    expect_reject(b, size / 2, "truncated");
    expect_reject(b, 40, "truncated or malformed");
    /* cut inside the prefix: truncated while the bytes there are a checkpoint's */
    expect_reject(b, 10, "truncated checkpoint (10 bytes");
    expect_reject(b, 8, "truncated checkpoint (8 bytes");
    expect_reject(b, 3, "truncated checkpoint (3 bytes");
    expect_reject(b, 0, "empty file");
    expect_reject((const uint8_t *)"CVAX", 4, "bad magic");
    uint8_t *longer = malloc(size + 8);
    memcpy(longer, b, size);
    memset(longer + size, 0, 8);
    expect_reject(longer, size + 8, "trailing bytes");
    free(longer);
    free(b);
}

Test(checkpoint, rejects_wrong_version_and_magic) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    b[8] = 99;
    fix_crc(b, size);
    expect_reject(b, size, "version 99");
    b[8] = 1;
    b[0] = 'X';
    fix_crc(b, size);
    expect_reject(b, size, "not a cvae checkpoint");
    free(b);
}

/* Cuts `bytes` bytes at `at` out of the header of b and relabels it as `version`. */
static void cut_header(uint8_t *b, size_t *size, size_t at, size_t bytes, uint8_t version) {
    memmove(b + at, b + at + bytes, *size - at - bytes);
    *size -= bytes;
    b[8] = version;
    uint32_t fields = (uint32_t)b[12] | (uint32_t)b[13] << 8;
    fields -= (uint32_t)bytes;
    b[12] = (uint8_t)fields;
    b[13] = (uint8_t)(fields >> 8);
}

/* The file this test writes (no names) as version 4: version 5 less its names block, the
 * count 0 before the CRC. */
static void to_version_4(uint8_t *b, size_t *size) {
    cr_assert(b[*size - 8] == 0 && b[*size - 7] == 0 && b[*size - 6] == 0 && b[*size - 5] == 0,
              "the names block of a file without names is not the count 0");
    memmove(b + *size - 8, b + *size - 4, 4);
    *size -= 4;
    b[8] = 4;
}

/* ... as version 3: version 4 less the objectives' block, the six u32 before n_params at
 * the header's end. */
static void to_version_3(uint8_t *b, size_t *size) {
    to_version_4(b, size);
    const uint32_t fields = (uint32_t)b[12] | (uint32_t)b[13] << 8;
    cut_header(b, size, 16 + fields - 8 - 24, 24, 3);
}

/* ... as version 2: version 3 less the channels and the condition kind, the two u32
 * before n_params at the header's end. */
static void to_version_2(uint8_t *b, size_t *size) {
    to_version_3(b, size);
    const uint32_t fields = (uint32_t)b[12] | (uint32_t)b[13] << 8;
    cut_header(b, size, 16 + fields - 8 - 8, 8, 2);
}

/* A version 3 file trained the ELBO with a KL warm-up held per epoch and a fixed sigma,
 * recorded no active units and had no names: so it loads, to resume exactly as it was
 * trained. */
Test(checkpoint, reads_version_3_files) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    to_version_3(b, &size);
    fix_crc(b, size);
    test_write_file(path, b, size);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(path, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ck.version, 3);
    cr_assert(ck.train.objective == CV_OBJECTIVE_ELBO && ck.train.samples == 1 &&
              ck.train.free_bits == 0.0f && ck.train.warmup_per_step == 0 &&
              !ck.cfg.sigma_learned && ck.active_units == -1, "version 3 defaults misread");
    cr_assert(ck.names == NULL);
    cr_assert(ck.n_params == saved.n_params && memcmp(ck.params, saved.params, saved.n_params * 4) == 0);
    cr_assert(memcmp(ck.adam_v, saved.adam_v, saved.n_params * 4) == 0);
    cv_checkpoint_free(&ck);
    free(b);
}

/* A version 4 file had no names block: it loads without names, its objectives as saved. */
Test(checkpoint, reads_version_4_files) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    to_version_4(b, &size);
    fix_crc(b, size);
    test_write_file(path, b, size);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(path, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert(ck.version == 4 && ck.names == NULL);
    cr_assert(memcmp(&ck.cfg, &saved.cfg, sizeof ck.cfg) == 0);
    cr_assert(ck.train.objective == saved.train.objective &&
              ck.train.samples == saved.train.samples &&
              ck.train.free_bits == saved.train.free_bits &&
              ck.train.warmup_per_step == saved.train.warmup_per_step &&
              ck.active_units == saved.active_units, "version 4's objectives misread");
    cr_assert(memcmp(ck.adam_v, saved.adam_v, saved.n_params * 4) == 0);
    cv_checkpoint_free(&ck);
    free(b);
}

/* A version 4 block of nonsense (an ELBO of 3 draws) is refused, not trained on. */
Test(checkpoint, refuses_a_malformed_objectives_block) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    const uint32_t fields = (uint32_t)b[12] | (uint32_t)b[13] << 8;
    const size_t objective_at = 16 + fields - 8 - 24;
    memset(b + objective_at, 0, 4); /* the ELBO, with the saved IWAE's draws */
    fix_crc(b, size);
    expect_reject(b, size, "invalid training state");
    free(b);
}

/* The names of the K conditions survive a round trip, and a damaged names block is
 * refused: a count that is neither 0 nor K, a name cut short or too long, a name a folder
 * cannot be (checked after the CRC). */
Test(checkpoint, names_round_trip_and_damage_is_refused) {
    char *names[3] = {"T-shirt", "b\"q", "ankle boot"};
    cr_assert(cv_names_copy(names, 3, &saved.names));
    cv_err err;
    cr_assert_eq(cv_checkpoint_save(path, &saved, &err), CV_OK, "%s", err.msg);
    cv_checkpoint ck;
    cr_assert_eq(cv_checkpoint_load(path, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert(ck.version == 5 && ck.names);
    for (int i = 0; i < 3; i++) cr_assert_str_eq(ck.names[i], names[i]);
    cv_checkpoint_free(&ck);
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    const size_t block = size - 4 - (4 + 2 + 7 + 2 + 3 + 2 + 10);
    cr_assert(b[block] == 3 && b[block + 4] == 7, "the block is not where version 5 puts it");
    uint8_t *c = malloc(size);
    memcpy(c, b, size);
    c[block] = 2; /* two names for three classes */
    fix_crc(c, size);
    expect_reject(c, size, "holds 2 condition names for 3 conditions");
    memcpy(c, b, size);
    c[block + 4] = 200; /* the first name runs past the file */
    fix_crc(c, size);
    expect_reject(c, size, "truncated or malformed condition name 0");
    memcpy(c, b, size);
    c[block + 4 + 2 + 1] = '/'; /* "T/shirt" */
    fix_crc(c, size);
    expect_reject(c, size, "condition name 0 is invalid: it holds a '/'");
    memcpy(c, b, size);
    c[block + 4 + 2 + 1] = '\0';
    fix_crc(c, size);
    expect_reject(c, size, "condition name 0 is invalid: it holds a NUL");
    expect_reject(b, size - 9, "truncated");
    free(c);
    free(b);
}

/* A version 2 file had no channels or condition kind: it loads as grey images of class
 * labels. */
Test(checkpoint, reads_version_2_files) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    to_version_2(b, &size);
    fix_crc(b, size);
    test_write_file(path, b, size);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(path, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ck.version, 2);
    cr_assert(ck.cfg.channels == 1 && ck.cfg.condition == CV_COND_LABELS &&
              ck.cfg.cond_width == saved.cfg.cond_width, "version 2 data shape misread");
    cr_assert(ck.sums.grad_norm == saved.sums.grad_norm && ck.n_params == saved.n_params);
    cr_assert(memcmp(ck.params, saved.params, saved.n_params * 4) == 0);
    cv_checkpoint_free(&ck);
    free(b);
}

/* A version 1 file held three loss sums where version 2 holds five: the same file as
 * version 1 still loads, with the gradient-norm sum and step count at 0. */
Test(checkpoint, reads_version_1_files) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    to_version_2(b, &size);
    const size_t sums_at = 16 + 4 * (5 + CV_MAX_HIDDEN) + 3 * 4 + 8 + 8 + 4 + 4 + 4 + 4;
    cut_header(b, &size, sums_at + 3 * 8, 16, 1); /* the two sums version 1 did not have */
    fix_crc(b, size);
    test_write_file(path, b, size);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(path, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ck.version, 1);
    cr_assert(ck.sums.rec == saved.sums.rec && ck.sums.kl == saved.sums.kl &&
              ck.sums.rows == saved.sums.rows, "version 1 sums misread");
    cr_assert(ck.sums.grad_norm == 0.0 && ck.sums.steps == 0.0);
    cr_assert(ck.position == saved.position && ck.nonfinite_steps == saved.nonfinite_steps &&
              ck.n_params == saved.n_params);
    cr_assert(memcmp(ck.params, saved.params, saved.n_params * 4) == 0);
    cv_checkpoint_free(&ck);
    free(b);
}

Test(checkpoint, rejects_config_that_disagrees_with_the_sizes) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    b[16 + 8] = 4; /* n_classes 3 -> 4: the parameter count no longer fits */
    fix_crc(b, size);
    expect_reject(b, size, "parameters but its config needs");
    b[16 + 8] = 0; /* no classes at all */
    fix_crc(b, size);
    expect_reject(b, size, "invalid model config");
    free(b);
}

Test(checkpoint, rejects_folders_and_missing_files) {
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(dir, &ck, &err), CV_ERR_IO);
    char missing[8192];
    snprintf(missing, sizeof missing, "%s/none.ckpt", dir);
    cr_assert_eq(cv_checkpoint_load(missing, &ck, &err), CV_ERR_IO);
}

Test(checkpoint, failed_save_leaves_the_old_file_and_no_temporary) {
    size_t before;
    uint8_t *old = test_read_file(path, &before);
    char bad[8192];
    snprintf(bad, sizeof bad, "%s/no/such/folder/model.ckpt", dir);
    cv_err err;
    cr_assert_eq(cv_checkpoint_save(bad, &saved, &err), CV_ERR_IO);
    cr_assert(strstr(err.msg, "cannot create") != NULL, "%s", err.msg);
    size_t after;
    uint8_t *now = test_read_file(path, &after);
    cr_assert(before == after && memcmp(old, now, before) == 0);
    free(old);
    free(now);
}
