/* cli_args.c: strict parsing of flag values and the one-line errors. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cvae/backend.h"

int cv_usage_error(const char *cmd, const char *fmt, ...) {
    if (cv_comm_launcher_rank() != 0) return CV_EXIT_USAGE; /* rank 0 says it */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cvae %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see cvae %s --help)\n", cmd);
    va_end(ap);
    return CV_EXIT_USAGE;
}

int cv_report(const char *cmd, cv_status status, const cv_err *err) {
    if (err->msg[0]) fprintf(stderr, "cvae %s: %s\n", cmd, err->msg);
    return status == CV_ERR_USAGE || status == CV_ERR_DEVICE ? CV_EXIT_USAGE : CV_EXIT_FAIL;
}

bool cv_parse_int(const char *cmd, const char *flag, const char *s, long min, long max,
                  int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cv_usage_error(cmd, "%s must be an integer in %ld..%ld, got '%s'", flag, min, max, s);
        return false;
    }
    *out = (int)v;
    return true;
}

bool cv_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        cv_usage_error(cmd, "%s must be a non-negative integer, got '%s'", flag, s);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

bool cv_parse_positive_float(const char *cmd, const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v) || !(v > 0.0f)) {
        cv_usage_error(cmd, "%s must be a finite number > 0, got '%s'", flag, s);
        return false;
    }
    *out = v;
    return true;
}

bool cv_parse_int_list(const char *cmd, const char *flag, const char *s, long min, long max,
                       int max_count, int *out, int *count) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        bool bad_sep = *end != ',' && *end != '\0';
        if (errno || end == p || bad_sep || v < min || v > max || n == max_count ||
            (*end == ',' && end[1] == '\0')) {
            cv_usage_error(cmd,
                           "%s must be a comma-separated list of at most %d integers in "
                           "%ld..%ld, got '%s'",
                           flag, max_count, min, max, s);
            return false;
        }
        out[n++] = (int)v;
        if (*end == '\0') break;
        p = end + 1;
    }
    *count = n;
    return true;
}

bool cv_parse_choice(const char *cmd, const char *flag, const char *s,
                     const char *const *names, int count, int *out) {
    for (int i = 0; i < count; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return true;
        }
    char list[256] = "";
    for (int i = 0; i < count; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 i == 0 ? "" : i == count - 1 ? " or " : ", ", names[i]);
    cv_usage_error(cmd, "%s must be %s, got '%s'", flag, list, s);
    return false;
}

bool cv_parse_device(const char *cmd, const char *s) {
    if (strcmp(s, "auto") == 0 || strcmp(s, "cpu") == 0 || strcmp(s, "cuda") == 0 ||
        cv_backend_cuda_index(s) >= 0)
        return true;
    if (strncmp(s, "cuda:", 5) == 0)
        cv_usage_error(cmd, "--device cuda:N takes a GPU number N in 0..255, got '%s'", s);
    else
        cv_usage_error(cmd, "--device must be auto, cpu, cuda or cuda:N, got '%s'", s);
    return false;
}

/* --image-size HxW (or N for N x N). */
static bool parse_image_size(const char *cmd, const char *s, cv_image_options *o) {
    char *end;
    errno = 0;
    long h = strtol(s, &end, 10), w = h;
    if (!errno && end != s && *end == 'x') {
        const char *rest = end + 1;
        w = strtol(rest, &end, 10);
        if (end == rest) w = 0;
    }
    if (errno || end == s || *end || h < 1 || w < 1 || h > CV_MAX_IMAGE_SIDE ||
        w > CV_MAX_IMAGE_SIDE) {
        cv_usage_error(cmd, "--image-size must be HxW (height x width, as 64x64) or N, each "
                       "1..%d, got '%s'", CV_MAX_IMAGE_SIDE, s);
        return false;
    }
    o->height = (int)h;
    o->width = (int)w;
    return true;
}

bool cv_data_file_flag(const char *cmd, int code, const char *arg, cv_data_files *f, bool *ok) {
    static const char *const crops[] = {"none", "center"};
    static const char *const channels[] = {"1", "3"};
    int choice = 0;
    *ok = true;
    switch (code) {
    case CV_OPT_TRAIN_IMAGES: f->train_images = arg; return true;
    case CV_OPT_TRAIN_LABELS: f->train_labels = arg; return true;
    case CV_OPT_TRAIN_CONDITIONS: f->train_conditions = arg; return true;
    case CV_OPT_TEST_IMAGES: f->test_images = arg; return true;
    case CV_OPT_TEST_LABELS: f->test_labels = arg; return true;
    case CV_OPT_TEST_CONDITIONS: f->test_conditions = arg; return true;
    case CV_OPT_TRAIN_CSV: f->train_table = arg; return true;
    case CV_OPT_TEST_CSV: f->test_table = arg; return true;
    case CV_OPT_CONDITION_COLUMNS: f->condition_columns = arg; return true;
    case CV_OPT_CACHE: f->image.cache_dir = arg; return true;
    case CV_OPT_IMAGE_SIZE: *ok = parse_image_size(cmd, arg, &f->image); return true;
    case CV_OPT_CROP:
        *ok = cv_parse_choice(cmd, "--crop", arg, crops, 2, &choice);
        f->image.crop_center = choice == 1;
        return true;
    case CV_OPT_CHANNELS:
        *ok = cv_parse_choice(cmd, "--channels", arg, channels, 2, &choice);
        f->image.channels = choice ? 3 : 1;
        return true;
    default: return false;
    }
}

int cv_check_data_file_flags(const char *cmd, const cv_data_files *f) {
    const bool tables = f->train_table || f->test_table;
    const bool arrays = f->train_images || f->train_labels || f->train_conditions ||
                        f->test_images || f->test_labels || f->test_conditions;
    if (tables && arrays)
        return cv_usage_error(cmd, "--train-csv and --test-csv do not mix with the IDX and .npy "
                              "file flags (--train-images, ...)");
    if (f->image.crop_center && !f->image.height)
        return cv_usage_error(cmd, "--crop center crops to the aspect ratio of --image-size, "
                              "which is missing");
    if (f->condition_columns && !f->condition_columns[0])
        return cv_usage_error(cmd, "--condition-columns must name at least one column");
    if (f->image.cache_dir && !f->image.cache_dir[0])
        return cv_usage_error(cmd, "--cache must not be empty");
    return 0;
}

static const char data_files_help[] =
    "data files (each over the one of the same role in --data DIR; a file's format is\n"
    "recognised from its content, IDX (plain or gzip) or NumPy .npy):\n"
    "  --train-images FILE    (N, H, W) or (N, H, W, C): IDX unsigned bytes, or .npy uint8\n"
    "                         or float32 in [0, 1]\n"
    "  --train-labels FILE    class indices 0..255: IDX idx1, or an integer .npy (N,)\n"
    "  --train-conditions FILE  condition vectors: a float32 .npy (N, K), finite\n"
    "  --test-images FILE, --test-labels FILE, --test-conditions FILE  the test split\n"
    "                         (optional; of the training split's condition kind: a\n"
    "                         folder's test split of the other kind, beside a training\n"
    "                         condition named by a flag, is left out with a note)\n";

static const char image_files_help[] =
    "image files (PNG, JPEG): --data DIR with DIR/train/<class>/*.png|jpg|jpeg (and\n"
    "optionally DIR/test/<class>/...), or CelebA's list_attr_celeba.txt (with\n"
    "img_align_celeba/ and list_eval_partition.txt: partition 0 trains, 2 tests), or:\n"
    "  --train-csv FILE       a table: a header row, a column 'image' (paths relative to\n"
    "                         FILE's folder) and a column 'label' (a class number or name)\n"
    "                         or columns of numbers (condition vectors); fields separated\n"
    "                         by commas or by spaces\n"
    "  --test-csv FILE        the test split's table\n"
    "  --condition-columns A,B,C  condition on these columns, in this order\n"
    "  --image-size HxW       resize every image (area filter down, Catmull-Rom up);\n"
    "                         without it every image must have the first one's size\n"
    "  --crop none|center     center: crop to the aspect ratio of --image-size first\n"
    "  --channels 1|3         convert to grey or RGB (default: the first image's)\n"
    "  --cache DIR            where decoded images are kept (default\n"
    "                         $XDG_CACHE_HOME/cvae, else ~/.cache/cvae): decoded once, in\n"
    "                         parallel, then mapped; rebuilt when the files change\n";

/* Whether word ("--name" or "--name=value") spells the flag name whole. */
static bool spelled_whole(const char *word, const char *name) {
    size_t n = strlen(name);
    return strncmp(word, "--", 2) == 0 && strncmp(word + 2, name, n) == 0 &&
           (word[2 + n] == '\0' || word[2 + n] == '=');
}

/* The edit distance between a[0, n) and b, counting a swap of neighbours as one edit
 * (optimal string alignment); names are short (< 64). */
static int edit_distance(const char *a, int n, const char *b) {
    const int m = (int)strlen(b);
    if (n > 63 || m > 63) return 64;
    int d[64][64];
    for (int i = 0; i <= n; i++) d[i][0] = i;
    for (int j = 0; j <= m; j++) d[0][j] = j;
    for (int i = 1; i <= n; i++)
        for (int j = 1; j <= m; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

/* The flag name[0, n) most likely meant: the nearest by edit distance, if at most 2 edits
 * away and fewer than n (a one-letter word is no one's typo); NULL when none is. */
static const char *nearest_flag(const char *name, int n, const struct option *opts) {
    const char *best = NULL;
    int best_d = 3;
    for (int i = 0; opts[i].name; i++) {
        int dist = edit_distance(name, n, opts[i].name);
        if (dist < best_d && dist < n) {
            best = opts[i].name;
            best_d = dist;
        }
    }
    return best;
}

/* The error line of an unknown word (all dashes and "=value" left out of name[0, n)),
 * with the flag it may have meant. */
static int unknown_flag(const char *cmd, const char *word, int len, const char *name, int n,
                        const struct option *opts) {
    for (int i = 0; word[1] != '-' && opts[i].name; i++)
        if ((int)strlen(opts[i].name) == n && strncmp(opts[i].name, name, (size_t)n) == 0)
            return cv_usage_error(cmd, "unknown flag '%.*s' (flags take two dashes, as in --%s)",
                                  len, word, opts[i].name);
    const char *near = nearest_flag(name, n, opts);
    if (near)
        return cv_usage_error(cmd, "unknown flag '%.*s' (did you mean --%s?)", len, word, near);
    return cv_usage_error(cmd, "unknown flag '%.*s'", len, word);
}

int cv_next_flag(const char *cmd, int argc, char **argv, const struct option *opts,
                 int *exit_code) {
    const int at = optind; /* no permutation ('+'): the flag read is argv[at] */
    int index = -1;
    const int c = getopt_long(argc, argv, "+:h", opts, &index);
    if (c == -1) return -1;
    const char *word = at < argc ? argv[at] : "";
    const int len = (int)strcspn(word, "=");
    const char *name = word + strspn(word, "-");
    if (c == ':')
        *exit_code = cv_usage_error(cmd, "%.*s needs a value", len, word);
    else if (c == '?')
        *exit_code = unknown_flag(cmd, word, len, name, len - (int)(name - word), opts);
    else if (index >= 0 && !spelled_whole(word, opts[index].name))
        *exit_code = cv_usage_error(cmd, "unknown flag '%.*s' (did you mean --%s?)", len, word,
                                    opts[index].name);
    else
        return c;
    return 0;
}

int cv_print_help_with_data_flags(const char *help) {
    printf("%s\n%s\n%s", help, data_files_help, image_files_help);
    return 0;
}
