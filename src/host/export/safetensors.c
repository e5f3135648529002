/* safetensors.c: the model as a .safetensors file for PyTorch (cvae/export.h).
 *
 * The format (huggingface/safetensors): a u64 little-endian header length n, n bytes of
 * JSON mapping each tensor's name to its dtype, shape and [begin, end) byte offsets in
 * the data that follows, plus "__metadata__" (a map of strings), then the tensors' bytes
 * back to back. The header is padded with spaces to a multiple of 8 bytes, so every F32
 * tensor starts aligned. Tensors are written one at a time, so memory holds the largest.
 */
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include "export_model.h"
#include "util/fileio.h"
#include "util/json.h"

/* The header JSON (malloc'd, padded), or NULL out of memory. */
static char *header_json(const cv_layout *lo, const char *config, size_t *len) {
    char *text = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&text, &n);
    if (!fp) return NULL;
    fputs("{\"__metadata__\": {\"format\": \"pt\", \"cvae\": \"", fp);
    cv_json_escape(fp, config);
    fputs("\"}", fp);
    uint64_t offset = 0;
    for (int k = 0; k < export_tensor_count(lo); k++) {
        export_tensor t;
        export_tensor_info(lo, k, &t);
        const uint64_t bytes = (uint64_t)export_tensor_size(&t) * sizeof(float);
        fprintf(fp, ", \"%s\": {\"dtype\": \"F32\", \"shape\": [%lld", t.name, (long long)t.rows);
        if (t.cols) fprintf(fp, ", %lld", (long long)t.cols);
        fprintf(fp, "], \"data_offsets\": [%llu, %llu]}", (unsigned long long)offset,
                (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    fputc('}', fp);
    /* 8 + n a multiple of 8: the data, and so every tensor, 8-byte aligned */
    while ((ftell(fp) % 8) != 0) fputc(' ', fp);
    bool ok = !ferror(fp);
    ok = fclose(fp) == 0 && ok;
    if (!ok) {
        free(text);
        return NULL;
    }
    *len = n;
    return text;
}

/* The tensors' bytes, each filled into scratch (the largest tensor's size) and written. */
static cv_status write_tensors(cv_outfile *f, const cv_layout *lo, const float *params,
                               cv_err *err) {
    int64_t largest = 0;
    for (int k = 0; k < export_tensor_count(lo); k++) {
        export_tensor t;
        export_tensor_info(lo, k, &t);
        if (export_tensor_size(&t) > largest) largest = export_tensor_size(&t);
    }
    float *scratch = malloc((size_t)largest * sizeof(float));
    if (!scratch)
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory: a tensor needs %.1f MiB",
                       (double)largest * sizeof(float) / 1048576.0);
    cv_status st = CV_OK;
    for (int k = 0; k < export_tensor_count(lo) && !st; k++) {
        export_tensor t;
        export_tensor_info(lo, k, &t);
        export_tensor_values(lo, params, k, scratch);
        st = cv_outfile_write(f, scratch, (size_t)export_tensor_size(&t) * sizeof(float), err);
    }
    free(scratch);
    return st;
}

/* The file, its folders made first (and taken back on failure). */
static cv_status write_file(const cv_export_source *src, const char *path, cv_err *err) {
    cv_layout lo;
    cv_status st = cv_layout_init(&src->ck->cfg, &lo, err);
    if (st) return st;
    char *config = export_config_json(src);
    size_t len = 0;
    char *header = config ? header_json(&lo, config, &len) : NULL;
    free(config);
    if (!header) return cv_fail(err, CV_ERR_NOMEM, "out of host memory for the header");
    cv_outfile f;
    st = cv_outfile_open(&f, path, err);
    uint8_t size[8];
    for (int i = 0; i < 8; i++) size[i] = (uint8_t)((uint64_t)len >> (8 * i));
    if (!st) st = cv_outfile_write(&f, size, sizeof size, err);
    if (!st) st = cv_outfile_write(&f, header, len, err);
    if (!st) st = write_tensors(&f, &lo, src->ck->params, err);
    free(header);
    if (st) {
        if (f.fp) cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}

cv_status cv_export_safetensors(const cv_export_source *src, const char *path, cv_err *err) {
    if (cv_path_exists(path))
        return cv_fail(err, CV_ERR_IO, "%s: exists already; choose a new file", path);
    char made[CV_PATH_MAX], copy[CV_PATH_MAX];
    cv_status st = cv_prepare_output_file(path, made, err);
    if (!st) st = write_file(src, path, err);
    if (st) {
        snprintf(copy, sizeof copy, "%s", path);
        cv_unmake_dirs(dirname(copy), made);
    }
    return st;
}
