/* cli_model_data.c: the data that eval, score, encode and the interpolation read for a
 * model that exists, kept to the classes or condition columns its checkpoint names. */
#include <unistd.h>

#include "cli.h"
#include "data/names.h"

void cv_data_files_for_model(cv_data_files *read, const cv_checkpoint *ck) {
    const cv_model_config *c = &ck->cfg;
    read->image.progress = isatty(STDERR_FILENO);
    /* --condition-columns names the columns itself; otherwise image files keep to the
     * model's classes (their numbers) or its columns (their order) */
    if (ck->names && !(c->condition == CV_COND_VECTORS && read->condition_columns)) {
        read->names = ck->names;
        read->n_names = c->cond_width;
        read->names_kind = c->condition;
    }
}

cv_status cv_data_names_fit(const cv_data *d, const cv_checkpoint *ck, const char *data,
                            const char *model, cv_err *err) {
    if (d->names && !ck->names && ck->cfg.condition == CV_COND_LABELS)
        return cv_fail(err, CV_ERR_FORMAT, "%s: the data's classes have names, but %s holds "
                       "none to match them to (it was trained on numbered classes)", data,
                       model);
    /* --condition-columns may name the model's columns otherwise, never swap them */
    for (int j = 0; d->names && ck->names && ck->cfg.condition == CV_COND_VECTORS &&
                    j < d->cond_width; j++) {
        const int k = cv_names_find(ck->names, ck->cfg.cond_width, d->names[j]);
        if (k >= 0 && k != j)
            return cv_fail(err, CV_ERR_USAGE, "--condition-columns gives column '%s' as "
                           "condition %d, but %s conditions on it as %d: name the columns in "
                           "the model's order (cvae info lists them)", d->names[j], j, model, k);
    }
    return CV_OK;
}
