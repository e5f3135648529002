/* table.c: text tables of images (the rules are in table.h). The file is read whole; its
 * lines are cut into fields in place (separators and closing quotes become NULs, quoted
 * fields are unescaped where they stand), and each field is kept as its offset. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/table.h"
#include "util/fileio.h"

/* One line being cut into fields. */
typedef struct {
    const char *path;
    char *text;
    int line;   /* from 1 */
    bool comma; /* CSV; else whitespace */
} splitter;

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static cv_status line_error(const splitter *sp, cv_err *err, const char *what) {
    return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: %s", sp->path, sp->line, what);
}

/* A quoted CSV field starting at *p (on the quote), unescaped in place from out; *p ends
 * past the closing quote. */
static cv_status quoted(const splitter *sp, char **p, char *end, char **out, cv_err *err) {
    char *r = *p + 1, *w = *out;
    for (;;) {
        if (r >= end) return line_error(sp, err, "a quoted field is not closed on its line");
        if (*r == '"' && r + 1 < end && r[1] == '"') {
            *w++ = '"';
            r += 2;
        } else if (*r == '"') {
            break;
        } else {
            *w++ = *r++;
        }
    }
    *out = w;
    *p = r + 1;
    return CV_OK;
}

/* The next CSV field of [*p, end): its offset into *field; *p ends past its comma (or at
 * end, with *more false). */
static cv_status csv_field(const splitter *sp, char **p, char *end, uint32_t *field, bool *more,
                           cv_err *err) {
    char *r = *p;
    while (r < end && is_blank(*r)) r++;
    char *start = r, *w = r;
    if (r < end && *r == '"') {
        cv_status st = quoted(sp, &r, end, &w, err);
        if (st) return st;
        while (r < end && is_blank(*r)) r++;
        if (r < end && *r != ',')
            return line_error(sp, err, "text after a closing quote (a quote inside a field is "
                              "written \"\")");
    } else {
        while (r < end && *r != ',') r++;
        w = r;
        while (w > start && is_blank(w[-1])) w--;
    }
    *more = r < end; /* on a comma */
    *w = '\0';
    *field = (uint32_t)(start - sp->text);
    *p = *more ? r + 1 : end;
    return CV_OK;
}

/* The fields of the line [p, end) into fields (at most max; *count gets how many the line
 * holds, which may be more). */
static cv_status split_line(const splitter *sp, char *p, char *end, uint32_t *fields, int max,
                            int *count, cv_err *err) {
    int n = 0;
    if (sp->comma) {
        bool more = true;
        while (more) {
            uint32_t f = 0;
            cv_status st = csv_field(sp, &p, end, &f, &more, err);
            if (st) return st;
            if (n < max) fields[n] = f;
            n++;
        }
    } else {
        while (p < end) {
            while (p < end && is_blank(*p)) p++;
            if (p == end) break;
            if (n < max) fields[n] = (uint32_t)(p - sp->text);
            n++;
            while (p < end && !is_blank(*p)) p++;
            *p = '\0'; /* end is the line's terminator, a NUL already */
            if (p < end) p++;
        }
    }
    *count = n;
    return CV_OK;
}

/* The lines of the text: NUL-terminated in place (CR dropped); blank ones skipped. */
typedef struct {
    char *p, *end;
    int line;
} line_reader;

static bool next_line(line_reader *lr, char **start, char **stop) {
    while (lr->p < lr->end) {
        char *s = lr->p, *e = memchr(s, '\n', (size_t)(lr->end - s));
        if (!e) e = lr->end;
        lr->p = e < lr->end ? e + 1 : e;
        lr->line++;
        *e = '\0';
        if (e > s && e[-1] == '\r') *--e = '\0';
        char *q = s;
        while (q < e && is_blank(*q)) q++;
        if (q == e) continue;
        *start = s;
        *stop = e;
        return true;
    }
    return false;
}

static bool all_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* The fields of one header line, into a new array (a line of n bytes has at most n + 1). */
static cv_status header_fields(cv_table *t, splitter *sp, char *s, char *e, uint32_t **at,
                               int *n, cv_err *err) {
    *at = malloc(((size_t)(e - s) + 1) * sizeof **at);
    if (!*at) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for the header", t->path);
    cv_status st = split_line(sp, s, e, *at, (int)(e - s) + 1, n, err);
    if (st) {
        free(*at);
        *at = NULL;
    }
    return st;
}

/* The header: the names of the columns; CelebA's count line before them is recognised
 * by being a lone number. */
static cv_status parse_header(cv_table *t, splitter *sp, line_reader *lr, long long *count,
                              cv_err *err) {
    char *s, *e;
    if (!next_line(lr, &s, &e))
        return cv_fail(err, CV_ERR_FORMAT, "%s: is empty (a table needs a header row naming "
                       "its columns)", t->path);
    sp->line = lr->line;
    sp->comma = memchr(s, ',', (size_t)(e - s)) != NULL;
    *count = -1;
    int n = 0;
    uint32_t *at;
    cv_status st = header_fields(t, sp, s, e, &at, &n, err);
    if (st) return st;
    if (n == 1 && all_digits(t->text + at[0])) { /* CelebA: the count, then the names */
        *count = strtoll(t->text + at[0], NULL, 10);
        t->celeba = true;
        free(at);
        if (!next_line(lr, &s, &e))
            return cv_fail(err, CV_ERR_FORMAT, "%s: holds a row count and no header", t->path);
        sp->line = lr->line;
        sp->comma = memchr(s, ',', (size_t)(e - s)) != NULL;
        st = header_fields(t, sp, s, e, &at, &n, err);
        if (st) return st;
    }
    const int first = t->celeba ? 1 : 0;
    t->n_cols = n + first;
    t->names = n + first <= CV_TABLE_MAX_COLUMNS ? calloc((size_t)t->n_cols, sizeof *t->names)
                                                 : NULL;
    if (t->names) {
        if (t->celeba) t->names[0] = "image";
        for (int i = 0; i < n; i++) t->names[i + first] = t->text + at[i];
    }
    free(at);
    if (n + first > CV_TABLE_MAX_COLUMNS)
        return line_error(sp, err, "more columns than cvae reads (100000)");
    return t->names ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for the header",
                                      t->path);
}

/* No column name empty or given twice. */
static cv_status check_names(const cv_table *t, int line, cv_err *err) {
    for (int i = 0; i < t->n_cols; i++) {
        if (!t->names[i][0])
            return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: column %d of the header has no "
                           "name", t->path, line, i + 1);
        for (int j = 0; j < i; j++)
            if (strcmp(t->names[i], t->names[j]) == 0)
                return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: the header names column '%s' "
                               "twice", t->path, line, t->names[i]);
    }
    return CV_OK;
}

static size_t count_lines(const char *p, size_t len) {
    size_t n = 1;
    for (const char *q = p; (q = memchr(q, '\n', len - (size_t)(q - p))) != NULL; q++) n++;
    return n;
}

/* One row's fields into cells (n_cols of them), exactly n_cols. */
static cv_status parse_row(cv_table *t, splitter *sp, char *s, char *e, uint32_t *cells,
                           cv_err *err) {
    int n = 0;
    cv_status st = split_line(sp, s, e, cells, t->n_cols, &n, err);
    if (st) return st;
    if (n < t->n_cols)
        return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: no value for column '%s' (the row has "
                       "%d fields, the header names %d columns)", t->path, sp->line,
                       t->names[n], n, t->n_cols);
    if (n > t->n_cols)
        return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: %d fields, but the header names %d "
                       "columns", t->path, sp->line, n, t->n_cols);
    return CV_OK;
}

static cv_status parse_rows(cv_table *t, splitter *sp, line_reader *lr, size_t len,
                            cv_err *err) {
    const size_t max_rows = count_lines(t->text, len);
    if (max_rows > INT32_MAX / 2)
        return cv_fail(err, CV_ERR_FORMAT, "%s: more rows than cvae reads", t->path);
    t->line = malloc(max_rows * sizeof *t->line);
    t->cells = malloc(max_rows * (size_t)t->n_cols * sizeof *t->cells);
    if (!t->line || !t->cells)
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %zu rows of %d columns",
                       t->path, max_rows, t->n_cols);
    char *s, *e;
    while (next_line(lr, &s, &e)) {
        sp->line = lr->line;
        cv_status st = parse_row(t, sp, s, e, t->cells + (size_t)t->n_rows * t->n_cols, err);
        if (st) return st;
        t->line[t->n_rows++] = lr->line;
    }
    return CV_OK;
}

/* The checks before any line is cut: the size, a byte-order mark, no NUL. */
static cv_status check_text(const char *path, char *text, size_t len, cv_err *err) {
    if (len > CV_TABLE_MAX_BYTES)
        return cv_fail(err, CV_ERR_FORMAT, "%s: a table of %zu bytes is over the 1 GiB cvae "
                       "reads", path, len);
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) memset(text, ' ', 3);
    if (memchr(text, '\0', len))
        return cv_fail(err, CV_ERR_FORMAT, "%s: holds a NUL byte: not a text table", path);
    return CV_OK;
}

cv_status cv_table_parse(const char *path, char *text, size_t len, cv_table *t, cv_err *err) {
    memset(t, 0, sizeof *t);
    t->path = path;
    t->text = text;
    splitter sp = {path, text, 0, false};
    line_reader lr = {text, text + len, 0};
    long long count = -1;
    cv_status st = check_text(path, text, len, err);
    if (!st) st = parse_header(t, &sp, &lr, &count, err);
    if (!st) st = check_names(t, sp.line, err);
    if (!st) st = parse_rows(t, &sp, &lr, len, err);
    if (!st && t->celeba && count != t->n_rows)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: its first line says %lld rows, but it holds %d "
                     "(cut short?)", path, count, t->n_rows);
    if (!st && t->n_rows == 0)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: has a header and no rows", path);
    if (st) cv_table_free(t);
    return st;
}

/* A file read whole, with a NUL after it (the last line's terminator). */
static cv_status read_text(const char *path, char **text, size_t *len, cv_err *err) {
    int fd;
    uint64_t size;
    cv_status st = cv_open_regular(path, "a table", &fd, &size, err);
    if (st) return st;
    *text = size <= CV_TABLE_MAX_BYTES ? malloc((size_t)size + 1) : NULL;
    if (!*text) {
        close(fd);
        return size > CV_TABLE_MAX_BYTES
                   ? cv_fail(err, CV_ERR_FORMAT, "%s: a table of %llu bytes is over the 1 GiB "
                             "cvae reads", path, (unsigned long long)size)
                   : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %llu bytes", path,
                             (unsigned long long)size);
    }
    size_t done = 0;
    int e = 0;
    while (done < size) {
        ssize_t got = read(fd, *text + done, (size_t)size - done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) e = errno;
        if (got <= 0) break;
        done += (size_t)got;
    }
    close(fd);
    if (e) {
        free(*text);
        return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    (*text)[done] = '\0';
    *len = done;
    return CV_OK;
}

cv_status cv_table_read(const char *path, cv_table *t, cv_err *err) {
    memset(t, 0, sizeof *t);
    char *text;
    size_t len;
    cv_status st = read_text(path, &text, &len, err);
    return st ? st : cv_table_parse(path, text, len, t, err);
}

cv_status cv_table_read_headless(const char *path, int n_cols, const char *const *names,
                                 cv_table *t, cv_err *err) {
    memset(t, 0, sizeof *t);
    t->path = path;
    size_t len;
    cv_status st = read_text(path, &t->text, &len, err);
    if (st) return st;
    const char *nl = memchr(t->text, '\n', len);
    splitter sp = {path, t->text, 0, memchr(t->text, ',', nl ? (size_t)(nl - t->text) : len)};
    line_reader lr = {t->text, t->text + len, 0};
    t->n_cols = n_cols;
    t->names = malloc((size_t)n_cols * sizeof *t->names);
    st = check_text(path, t->text, len, err);
    if (!st && !t->names) st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; !st && i < n_cols; i++) t->names[i] = names[i];
    if (!st) st = parse_rows(t, &sp, &lr, len, err);
    if (!st && t->n_rows == 0) st = cv_fail(err, CV_ERR_FORMAT, "%s: is empty", path);
    if (st) cv_table_free(t);
    return st;
}

void cv_table_free(cv_table *t) {
    free(t->text);
    free(t->names);
    free(t->line);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

int cv_table_column(const cv_table *t, const char *name) {
    for (int i = 0; i < t->n_cols; i++)
        if (strcmp(t->names[i], name) == 0) return i;
    return -1;
}

bool cv_table_number(const char *field, float *value) {
    char *end;
    errno = 0;
    const float v = strtof(field, &end);
    if (end == field || *end || !isfinite(v)) return false;
    *value = v;
    return true;
}
