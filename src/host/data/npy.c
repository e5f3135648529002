/* npy.c: NumPy .npy files, validated before allocating.
 *
 * Layout: "\x93NUMPY", major and minor version bytes, the header length (u16 for 1.0, u32
 * for 2.0 and 3.0, little-endian), the header: a Python dict literal
 * {'descr': ..., 'fortran_order': ..., 'shape': ...} padded with spaces and ending in '\n',
 * then the payload. The dict is parsed by a small tokenizer that accepts only what that
 * literal can be (no eval, no nesting beyond the shape tuple), so a hostile header can do
 * nothing but be refused. The file must be exactly header + payload bytes long.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cvae/npy.h"
#include "util/fileio.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy I/O assumes little-endian");

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_HEADER (1u << 20)
#define NPY_MAX_PAYLOAD (UINT64_C(1) << 40)
#define NPY_ALIGN 64
#define READ_CHUNK (1u << 30)
#define SHOWN 40 /* at most this many characters of a token in a message */

/* --- dtypes --- */

static const struct {
    const char *descr;
    size_t size;
    bool integer;
} dtypes[] = {
    [CV_NPY_U8] = {"|u1", 1, true},  [CV_NPY_I8] = {"|i1", 1, true},
    [CV_NPY_U16] = {"<u2", 2, true}, [CV_NPY_I16] = {"<i2", 2, true},
    [CV_NPY_U32] = {"<u4", 4, true}, [CV_NPY_I32] = {"<i4", 4, true},
    [CV_NPY_U64] = {"<u8", 8, true}, [CV_NPY_I64] = {"<i8", 8, true},
    [CV_NPY_F32] = {"<f4", 4, false},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

size_t cv_npy_item_size(cv_npy_dtype t) {
    CV_ASSERT((unsigned)t < N_DTYPES);
    return dtypes[t].size;
}

const char *cv_npy_descr(cv_npy_dtype t) {
    CV_ASSERT((unsigned)t < N_DTYPES);
    return dtypes[t].descr;
}

bool cv_npy_is_integer(cv_npy_dtype t) {
    CV_ASSERT((unsigned)t < N_DTYPES);
    return dtypes[t].integer;
}

/* The dtype a descr names: the table's own, or '<' for a byte type (byte order means
 * nothing there, and some writers say '<u1'). */
static bool dtype_of(const char *s, size_t len, cv_npy_dtype *t) {
    for (unsigned i = 0; i < N_DTYPES; i++) {
        const char *d = dtypes[i].descr;
        bool same = len == 3 && memcmp(s + 1, d + 1, 2) == 0 &&
                    (s[0] == d[0] || (s[0] == '<' && dtypes[i].size == 1));
        if (same) {
            *t = (cv_npy_dtype)i;
            return true;
        }
    }
    return false;
}

/* --- reading whole byte ranges --- */

/* Reads up to n bytes, stopping early only at end of file; *got says how many came.
 * Returns 0 or an errno. Short reads and EINTR are retried. */
static int read_upto(int fd, void *buf, size_t n, size_t *got) {
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        size_t want = n - done < READ_CHUNK ? n - done : READ_CHUNK;
        ssize_t r = read(fd, p + done, want);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            *got = done;
            return errno;
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

/* Exactly n bytes of `what`, or one line saying why not. */
static cv_status read_exact(int fd, const char *path, void *buf, size_t n, const char *what,
                            cv_err *err) {
    size_t got;
    int e = read_upto(fd, buf, n, &got);
    if (e) return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    if (got < n)
        return cv_fail(err, CV_ERR_FORMAT, "%s: truncated %s (%zu of %zu bytes present)",
                       path, what, got, n);
    return CV_OK;
}

/* Whether the first `got` bytes of a file (got > 0) are the magic or its start: a file
 * cut inside the magic is a truncated .npy. */
static bool starts_like_npy(const uint8_t *head, size_t got) {
    return got > 0 && memcmp(head, NPY_MAGIC, got < NPY_MAGIC_LEN ? got : NPY_MAGIC_LEN) == 0;
}

bool cv_npy_sniff(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return false;
    uint8_t head[NPY_MAGIC_LEN];
    size_t got;
    bool yes = read_upto(fd, head, sizeof head, &got) == 0 && starts_like_npy(head, got);
    close(fd);
    return yes;
}

/* --- the header dict: tokens --- */

typedef enum { TOK_END, TOK_PUNCT, TOK_STRING, TOK_INT, TOK_WORD } tok_kind;

typedef struct {
    tok_kind kind;
    const char *s; /* the characters (a string's without its quotes) */
    size_t len;
} token;

typedef struct {
    const char *path;
    const char *start, *p, *end; /* the dict text; p: the next character to read */
    cv_err *err;
} dict_parser;

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_word(char c) {
    return is_digit(c) || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static cv_status syntax_error(dict_parser *dp, const char *what) {
    return cv_fail(dp->err, CV_ERR_FORMAT, "%s: bad .npy header: %s at header offset %td",
                   dp->path, what, dp->p - dp->start);
}

/* A quoted string without escapes (no descr or key NumPy writes has one): printable ASCII
 * up to the same quote. */
static cv_status scan_string(dict_parser *dp, token *t) {
    char quote = *dp->p++;
    t->s = dp->p;
    while (dp->p < dp->end && *dp->p != quote) {
        if (*dp->p == '\\') return syntax_error(dp, "escape sequence in a string");
        if (*dp->p == '\n') return syntax_error(dp, "unterminated string");
        if (*dp->p < 0x20 || *dp->p > 0x7e) return syntax_error(dp, "control byte in a string");
        dp->p++;
    }
    if (dp->p == dp->end) return syntax_error(dp, "unterminated string");
    t->kind = TOK_STRING;
    t->len = (size_t)(dp->p - t->s);
    dp->p++;
    return CV_OK;
}

/* A decimal integer as Python writes one: no sign (a '-' is a token of its own), no
 * leading zero, and not the start of a float or a name. */
static cv_status scan_int(dict_parser *dp, token *t) {
    t->s = dp->p;
    while (dp->p < dp->end && is_digit(*dp->p)) dp->p++;
    t->kind = TOK_INT;
    t->len = (size_t)(dp->p - t->s);
    if (dp->p < dp->end && (is_word(*dp->p) || *dp->p == '.'))
        return syntax_error(dp, "a number that is not a decimal integer");
    if (t->len > 1 && t->s[0] == '0')
        return syntax_error(dp, "an integer with a leading zero");
    return CV_OK;
}

static cv_status next_token(dict_parser *dp, token *t) {
    while (dp->p < dp->end && is_space(*dp->p)) dp->p++;
    t->s = dp->p;
    t->len = 0;
    if (dp->p == dp->end) {
        t->kind = TOK_END;
        return CV_OK;
    }
    char c = *dp->p;
    if (c != '\0' && strchr("{}()[]:,-", c)) {
        t->kind = TOK_PUNCT;
        t->len = 1;
        dp->p++;
        return CV_OK;
    }
    if (c == '\'' || c == '"') return scan_string(dp, t);
    if (is_digit(c)) return scan_int(dp, t);
    if (is_word(c)) {
        while (dp->p < dp->end && is_word(*dp->p)) dp->p++;
        t->kind = TOK_WORD;
        t->len = (size_t)(dp->p - t->s);
        return CV_OK;
    }
    if (c > 0x20 && c < 0x7f)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: bad .npy header: unexpected character '%c' at header offset %td",
                       dp->path, c, dp->p - dp->start);
    return cv_fail(dp->err, CV_ERR_FORMAT,
                   "%s: bad .npy header: unexpected byte 0x%02x at header offset %td",
                   dp->path, (unsigned char)c, dp->p - dp->start);
}

static bool is_punct(const token *t, char c) { return t->kind == TOK_PUNCT && t->s[0] == c; }

/* A token as a message shows it: "'x'", "the string 'abc'", "the end of the dict". */
static const char *shown(const token *t, char buf[SHOWN + 32]) {
    int len = (int)(t->len < SHOWN ? t->len : SHOWN);
    if (t->kind == TOK_END)
        snprintf(buf, SHOWN + 32, "the end of the header");
    else if (t->kind == TOK_STRING)
        snprintf(buf, SHOWN + 32, "the string '%.*s'", len, t->s);
    else
        snprintf(buf, SHOWN + 32, "'%.*s'", len, t->s);
    return buf;
}

/* The next token, which must be the punctuation c. */
static cv_status expect(dict_parser *dp, char c, const char *where) {
    token t;
    cv_status st = next_token(dp, &t);
    if (st || is_punct(&t, c)) return st;
    char buf[SHOWN + 32];
    return cv_fail(dp->err, CV_ERR_FORMAT, "%s: bad .npy header: expected '%c' %s, found %s",
                   dp->path, c, where, shown(&t, buf));
}

/* --- the header dict: values --- */

/* Why a descr outside the table is refused, with the fix where there is an obvious one. */
static cv_status bad_descr(dict_parser *dp, const token *t) {
    int len = (int)(t->len < SHOWN ? t->len : SHOWN);
    /* the same type in the order we read, when we read it */
    char le[3] = {'<', t->len == 3 ? t->s[1] : 0, t->len == 3 ? t->s[2] : 0};
    cv_npy_dtype same;
    bool has_le = t->len == 3 && dtype_of(le, 3, &same);
    if (t->len > 0 && (t->s[0] == '>' || t->s[0] == '!'))
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: dtype '%.*s' is big-endian, which is not supported; save "
                       "a.astype('%.3s')", dp->path, len, t->s, has_le ? le : "<f4");
    if (t->len > 0 && t->s[0] == '=')
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: dtype '%.*s' has native byte order, which is not supported; save "
                       "a.astype('%.3s')", dp->path, len, t->s, has_le ? le : "<f4");
    if (t->len == 3 && memcmp(t->s, "<f8", 3) == 0)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: dtype '<f8' (float64) is not supported; save "
                       "a.astype(np.float32)", dp->path);
    return cv_fail(dp->err, CV_ERR_FORMAT,
                   "%s: unsupported dtype '%.*s' (supported: |u1 |i1 <u2 <i2 <u4 <i4 <u8 "
                   "<i8 <f4)", dp->path, len, t->s);
}

static cv_status parse_descr(dict_parser *dp, cv_npy_array *a) {
    token t;
    cv_status st = next_token(dp, &t);
    if (st) return st;
    if (is_punct(&t, '['))
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: structured dtypes (a list of fields as descr) are not supported",
                       dp->path);
    char buf[SHOWN + 32];
    if (t.kind != TOK_STRING)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: bad .npy header: 'descr' must be a quoted dtype, found %s",
                       dp->path, shown(&t, buf));
    return dtype_of(t.s, t.len, &a->dtype) ? CV_OK : bad_descr(dp, &t);
}

static cv_status parse_fortran_order(dict_parser *dp) {
    token t;
    cv_status st = next_token(dp, &t);
    if (st) return st;
    bool word = t.kind == TOK_WORD;
    if (word && t.len == 5 && memcmp(t.s, "False", 5) == 0) return CV_OK;
    if (word && t.len == 4 && memcmp(t.s, "True", 4) == 0)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: Fortran order is not supported; save np.ascontiguousarray(a)",
                       dp->path);
    char buf[SHOWN + 32];
    return cv_fail(dp->err, CV_ERR_FORMAT,
                   "%s: bad .npy header: 'fortran_order' must be False or True, found %s",
                   dp->path, shown(&t, buf));
}

/* One dimension of the shape (t is its first token): 1..INT32_MAX. */
static cv_status parse_dim(dict_parser *dp, token t, int index, int64_t *dim) {
    char buf[SHOWN + 32];
    if (is_punct(&t, '-')) {
        cv_status st = next_token(dp, &t);
        if (st) return st;
        if (t.kind == TOK_INT)
            return cv_fail(dp->err, CV_ERR_FORMAT, "%s: shape dimension %d is negative (-%.*s)",
                           dp->path, index, (int)(t.len < SHOWN ? t.len : SHOWN), t.s);
    }
    if (t.kind != TOK_INT)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: bad .npy header: shape dimension %d is %s, not an integer",
                       dp->path, index, shown(&t, buf));
    uint64_t v = 0;
    for (size_t i = 0; i < t.len && v <= INT32_MAX; i++) v = v * 10 + (uint64_t)(t.s[i] - '0');
    if (v == 0)
        return cv_fail(dp->err, CV_ERR_FORMAT, "%s: holds no elements (shape dimension %d is 0)",
                       dp->path, index);
    if (v > INT32_MAX)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: shape dimension %d is %.*s (at most %d is supported)", dp->path,
                       index, (int)(t.len < SHOWN ? t.len : SHOWN), t.s, INT32_MAX);
    *dim = (int64_t)v;
    return CV_OK;
}

/* A tuple of 1..CV_NPY_MAX_DIMS dimensions: "(5,)", "(5, 3)", "(5, 3,)". Dimensions past
 * the limit are still parsed, so the message can count them. */
static cv_status parse_shape(dict_parser *dp, cv_npy_array *a) {
    token t;
    char buf[SHOWN + 32];
    cv_status st = next_token(dp, &t);
    if (st) return st;
    if (!is_punct(&t, '('))
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: bad .npy header: 'shape' must be a tuple such as (5, 3), found %s",
                       dp->path, shown(&t, buf));
    st = next_token(dp, &t);
    if (st) return st;
    if (is_punct(&t, ')'))
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: holds a 0-d array (shape ()), which is not supported", dp->path);
    int n = 0;
    for (;;) { /* t is the first token of dimension n */
        int64_t dim = 0;
        st = parse_dim(dp, t, n, &dim);
        if (st) return st;
        if (n < CV_NPY_MAX_DIMS) a->dims[n] = dim;
        n++;
        st = next_token(dp, &t);
        if (st) return st;
        if (is_punct(&t, ')') && n == 1)
            return cv_fail(dp->err, CV_ERR_FORMAT,
                           "%s: bad .npy header: shape (%" PRId64 ") is not a tuple (a 1-d "
                           "shape is written (%" PRId64 ",))", dp->path, dim, dim);
        if (is_punct(&t, ')')) break;
        if (!is_punct(&t, ','))
            return cv_fail(dp->err, CV_ERR_FORMAT,
                           "%s: bad .npy header: expected ',' or ')' in the shape, found %s",
                           dp->path, shown(&t, buf));
        st = next_token(dp, &t);
        if (st) return st;
        if (is_punct(&t, ')')) break; /* a trailing comma */
    }
    if (n > CV_NPY_MAX_DIMS)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: has %d dimensions (at most %d are supported)", dp->path, n,
                       CV_NPY_MAX_DIMS);
    a->ndims = n;
    return CV_OK;
}

/* --- the header dict: the whole literal --- */

static const char *const keys[3] = {"descr", "fortran_order", "shape"};

static cv_status parse_value(dict_parser *dp, int key, cv_npy_array *a) {
    if (key == 0) return parse_descr(dp, a);
    if (key == 1) return parse_fortran_order(dp);
    return parse_shape(dp, a);
}

/* One "'key': value" pair (t is the key's token); *seen collects the keys read so far. */
static cv_status parse_pair(dict_parser *dp, const token *t, unsigned *seen, cv_npy_array *a) {
    char buf[SHOWN + 32];
    if (t->kind != TOK_STRING)
        return cv_fail(dp->err, CV_ERR_FORMAT,
                       "%s: bad .npy header: expected a quoted key or '}', found %s",
                       dp->path, shown(t, buf));
    int key = -1;
    for (int k = 0; k < 3; k++)
        if (t->len == strlen(keys[k]) && memcmp(t->s, keys[k], t->len) == 0) key = k;
    if (key < 0)
        return cv_fail(dp->err, CV_ERR_FORMAT, "%s: bad .npy header: unknown key '%.*s'",
                       dp->path, (int)(t->len < SHOWN ? t->len : SHOWN), t->s);
    if (*seen & (1u << key))
        return cv_fail(dp->err, CV_ERR_FORMAT, "%s: bad .npy header: key '%s' appears twice",
                       dp->path, keys[key]);
    *seen |= 1u << key;
    snprintf(buf, sizeof buf, "after the key '%s'", keys[key]);
    cv_status st = expect(dp, ':', buf);
    return st ? st : parse_value(dp, key, a);
}

/* "{" pairs separated by commas, an optional trailing comma, "}", then only spaces. */
static cv_status parse_dict(dict_parser *dp, cv_npy_array *a) {
    cv_status st = expect(dp, '{', "at the start of the header");
    unsigned seen = 0;
    token t;
    if (!st) st = next_token(dp, &t);
    while (!st && !is_punct(&t, '}')) {
        st = parse_pair(dp, &t, &seen, a);
        if (!st) st = next_token(dp, &t);
        if (st || is_punct(&t, '}')) break;
        char buf[SHOWN + 32];
        if (!is_punct(&t, ','))
            return cv_fail(dp->err, CV_ERR_FORMAT,
                           "%s: bad .npy header: expected ',' or '}' after a value, found %s",
                           dp->path, shown(&t, buf));
        st = next_token(dp, &t);
    }
    if (st) return st;
    for (int k = 0; k < 3; k++)
        if (!(seen & (1u << k)))
            return cv_fail(dp->err, CV_ERR_FORMAT, "%s: bad .npy header: no '%s' key",
                           dp->path, keys[k]);
    while (dp->p < dp->end && *dp->p == ' ') dp->p++;
    if (dp->p != dp->end)
        return syntax_error(dp, "something other than spaces after '}'");
    return CV_OK;
}

/* --- the file --- */

/* The payload bytes of a shape of dimensions 1..INT32_MAX; false past NPY_MAX_PAYLOAD. */
static bool shape_bytes(cv_npy_dtype t, int ndims, const int64_t *dims, size_t *bytes) {
    uint64_t total = cv_npy_item_size(t);
    for (int i = 0; i < ndims; i++) {
        if (total > NPY_MAX_PAYLOAD / (uint64_t)dims[i]) return false;
        total *= (uint64_t)dims[i];
    }
    *bytes = (size_t)total;
    return true;
}

/* The payload size the shape declares, bounded before anything is allocated. */
static cv_status payload_bytes(const char *path, cv_npy_array *a, cv_err *err) {
    if (shape_bytes(a->dtype, a->ndims, a->dims, &a->bytes)) return CV_OK;
    return cv_fail(err, CV_ERR_FORMAT,
                   "%s: shape is absurd (the payload would exceed %" PRIu64 " bytes)", path,
                   NPY_MAX_PAYLOAD);
}

/* The magic, the version and the header length; *offset gets where the header text
 * starts. */
static cv_status read_preamble(int fd, const char *path, uint64_t size, uint32_t *hlen,
                               size_t *offset, cv_err *err) {
    uint8_t pre[12];
    size_t got;
    int e = read_upto(fd, pre, 8, &got);
    if (e) return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    if (!starts_like_npy(pre, got))
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a .npy file (bad magic)", path);
    if (got < 8)
        return cv_fail(err, CV_ERR_FORMAT, "%s: truncated header (%zu of 8 bytes present)",
                       path, got);
    if ((pre[6] != 1 && pre[6] != 2 && pre[6] != 3) || pre[7] != 0)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: unsupported .npy version %u.%u (1.0, 2.0 and 3.0 are read)", path,
                       pre[6], pre[7]);
    size_t field = pre[6] == 1 ? 2 : 4;
    cv_status st = read_exact(fd, path, pre + 8, field, "header", err);
    if (st) return st;
    *hlen = field == 2 ? (uint32_t)pre[8] | (uint32_t)pre[9] << 8
                       : (uint32_t)pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 |
                             (uint32_t)pre[11] << 24;
    *offset = 8 + field;
    if (*hlen == 0) return cv_fail(err, CV_ERR_FORMAT, "%s: header length is 0", path);
    if (*hlen > NPY_MAX_HEADER)
        return cv_fail(err, CV_ERR_FORMAT, "%s: header length %" PRIu32 " is over %u bytes",
                       path, *hlen, NPY_MAX_HEADER);
    if (*offset + *hlen > size)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: header length %" PRIu32 " runs past the end of the file (%" PRIu64
                       " bytes)", path, *hlen, size);
    return CV_OK;
}

/* The header text must be ASCII (all the dict we accept can hold) and end in '\n'. */
static cv_status check_text(const char *path, const char *text, uint32_t hlen, cv_err *err) {
    for (uint32_t i = 0; i < hlen; i++)
        if ((unsigned char)text[i] >= 0x80)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: non-ASCII byte 0x%02x at header offset %" PRIu32, path,
                           (unsigned char)text[i], i);
    if (text[hlen - 1] != '\n')
        return cv_fail(err, CV_ERR_FORMAT, "%s: header does not end with a newline", path);
    return CV_OK;
}

/* Everything before the payload, into a (dtype, shape, bytes); *offset gets where the
 * payload starts. */
static cv_status read_header(int fd, const char *path, uint64_t size, cv_npy_array *a,
                             uint64_t *offset, cv_err *err) {
    uint32_t hlen = 0;
    size_t start = 0;
    cv_status st = read_preamble(fd, path, size, &hlen, &start, err);
    if (st) return st;
    char *text = malloc(hlen);
    if (!text)
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for a %" PRIu32 "-byte header",
                       path, hlen);
    st = read_exact(fd, path, text, hlen, "header", err);
    if (!st) st = check_text(path, text, hlen, err);
    if (!st) {
        dict_parser dp = {path, text, text, text + hlen - 1, err};
        st = parse_dict(&dp, a);
    }
    free(text);
    if (!st) st = payload_bytes(path, a, err);
    *offset = start + hlen;
    return st;
}

/* The file must hold the payload exactly: checked before it is allocated. */
static cv_status check_size(const char *path, uint64_t size, uint64_t offset,
                            const cv_npy_array *a, cv_err *err) {
    uint64_t have = size - offset, want = a->bytes;
    if (have < want)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: truncated (%" PRIu64 " of %" PRIu64 " payload bytes present)", path,
                       have, want);
    if (have > want)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: trailing bytes (%" PRIu64 " after the %" PRIu64 "-byte payload)",
                       path, have - want, want);
    return CV_OK;
}

static cv_status read_payload(int fd, const char *path, cv_npy_array *a, cv_err *err) {
    a->data = malloc(a->bytes);
    if (!a->data)
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %zu bytes", path, a->bytes);
    cv_status st = read_exact(fd, path, a->data, a->bytes, "payload", err);
    if (st) {
        free(a->data);
        a->data = NULL;
    }
    return st;
}

/* The whole file mapped, data at offset. */
static cv_status map_payload(int fd, const char *path, uint64_t size, uint64_t offset,
                             cv_npy_array *a, cv_err *err) {
    void *m = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        return cv_fail(err, errno == ENOMEM ? CV_ERR_NOMEM : CV_ERR_IO, "%s: cannot map: %s",
                       path, strerror(errno));
    a->mapping = m;
    a->mapping_bytes = (size_t)size;
    a->data = (uint8_t *)m + offset;
    return CV_OK;
}

static cv_status npy_load(const char *path, bool map, cv_npy_array *out, cv_err *err) {
    memset(out, 0, sizeof *out);
    int fd = -1;
    uint64_t size = 0, offset = 0;
    cv_status st = cv_open_regular(path, "a .npy file", &fd, &size, err);
    if (st) return st;
    cv_npy_array a = {0};
    st = read_header(fd, path, size, &a, &offset, err);
    if (!st) st = check_size(path, size, offset, &a, err);
    if (!st && map && offset % cv_npy_item_size(a.dtype) == 0)
        st = map_payload(fd, path, size, offset, &a, err);
    else if (!st)
        st = read_payload(fd, path, &a, err);
    close(fd);
    if (!st) *out = a;
    return st;
}

cv_status cv_npy_read(const char *path, cv_npy_array *out, cv_err *err) {
    return npy_load(path, false, out, err);
}

cv_status cv_npy_map(const char *path, cv_npy_array *out, cv_err *err) {
    return npy_load(path, true, out, err);
}

void cv_npy_free(cv_npy_array *a) {
    if (!a) return;
    if (a->mapping)
        munmap(a->mapping, a->mapping_bytes);
    else
        free(a->data);
    memset(a, 0, sizeof *a);
}

/* --- writing --- */

size_t cv_npy_header(char *buf, size_t size, cv_npy_dtype t, int ndims, const int64_t *dims) {
    CV_ASSERT(ndims >= 1 && ndims <= CV_NPY_MAX_DIMS);
    char shape[CV_NPY_MAX_DIMS * 24 + 4];
    int n = snprintf(shape, sizeof shape, "(");
    for (int i = 0; i < ndims; i++) {
        CV_ASSERT(dims[i] >= 0);
        n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, i ? ", " : "",
                      dims[i]);
    }
    snprintf(shape + n, sizeof shape - (size_t)n, ndims == 1 ? ",)" : ")");
    /* the dict as NumPy writes it: keys sorted, each pair followed by ", " */
    char dict[CV_NPY_HEADER_MAX];
    int dlen = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, "
                        "'shape': %s, }", cv_npy_descr(t), shape);
    CV_ASSERT(dlen > 0 && (size_t)dlen < sizeof dict);
    /* version 1.0: the dict, under CV_NPY_HEADER_MAX bytes, always fits its u16 length */
    const size_t pre = 10;
    const size_t total = (pre + (size_t)dlen + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    if (total > size) return 0;
    const size_t hlen = total - pre;
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + pre, dict, (size_t)dlen);
    memset(buf + pre + dlen, ' ', hlen - (size_t)dlen - 1);
    buf[total - 1] = '\n';
    return total;
}

/* The checks cv_npy_read makes of a shape, so that what is written can be read. */
static cv_status check_shape(const char *path, cv_npy_dtype t, int ndims, const int64_t *dims,
                             size_t *bytes, cv_err *err) {
    CV_ASSERT(ndims >= 1 && ndims <= CV_NPY_MAX_DIMS);
    for (int i = 0; i < ndims; i++)
        if (dims[i] < 1 || dims[i] > INT32_MAX)
            return cv_fail(err, CV_ERR_USAGE, "%s: dimension %d is %" PRId64 " (must be 1..%d)",
                           path, i, dims[i], INT32_MAX);
    if (shape_bytes(t, ndims, dims, bytes)) return CV_OK;
    return cv_fail(err, CV_ERR_USAGE, "%s: array is over %" PRIu64 " bytes", path,
                   NPY_MAX_PAYLOAD);
}

cv_status cv_npy_write(const char *path, cv_npy_dtype t, int ndims, const int64_t *dims,
                       const void *data, cv_err *err) {
    size_t bytes = 0;
    cv_status st = check_shape(path, t, ndims, dims, &bytes, err);
    if (st) return st;
    CV_ASSERT(data != NULL);
    char header[CV_NPY_HEADER_MAX];
    size_t hlen = cv_npy_header(header, sizeof header, t, ndims, dims);
    CV_ASSERT(hlen > 0);
    cv_outfile f;
    st = cv_outfile_open(&f, path, err);
    if (st) return st;
    st = cv_outfile_write(&f, header, hlen, err);
    if (!st) st = cv_outfile_write(&f, data, bytes, err);
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}
