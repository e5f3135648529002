/* test_npy.c: the .npy reader and writer: round trips of every dtype and rank, files that
 * NumPy writes (versions 1.0, 2.0 and 3.0: byte vectors written here, and files made at
 * test time by /usr/bin/python3 with NumPy, which must be installed: python3-numpy), the
 * header spellings the Python literal allows, and every malformation the reader must
 * reject, each with its status, its message and no descriptor left open. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvae/npy.h"
#include "helpers.h"

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(npy, .init = setup, .fini = teardown);

static void path_of(char *out, const char *name) { sprintf(out, "%s/%s", dir, name); }

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* A .npy file in dir: magic, version major.minor, the header length (u16 for 1.x, u32
 * otherwise), then `text` (when pad, followed by spaces up to a multiple of 64 and '\n'),
 * then n payload bytes. */
static void write_npy(const char *name, int major, int minor, const char *text, bool pad,
                      const void *payload, size_t n) {
    size_t pre = major == 1 ? 10 : 12, len = strlen(text);
    size_t hlen = pad ? (pre + len + 1 + 63) / 64 * 64 - pre : len;
    uint8_t *b = malloc(pre + hlen + n + 1);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (uint8_t)major;
    b[7] = (uint8_t)minor;
    for (size_t i = 0; i < pre - 8; i++) b[8 + i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + pre, text, len);
    if (pad) {
        memset(b + pre + len, ' ', hlen - len - 1);
        b[pre + hlen - 1] = '\n';
    }
    if (n) memcpy(b + pre + hlen, payload, n);
    char p[4096];
    path_of(p, name);
    test_write_file(p, b, pre + hlen + n);
    free(b);
}

/* The dict NumPy writes for descr and shape (shape as Python prints it). */
static const char *dict(const char *descr, const char *shape) {
    static char buf[512];
    snprintf(buf, sizeof buf, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
             shape);
    return buf;
}

/* Reads name, which must be rejected with status `want`: one line that starts with the
 * path and holds needle, *out zeroed, and as many descriptors open as before. */
static void expect_reject(const char *name, cv_status want, const char *needle) {
    char p[4096];
    path_of(p, name);
    int before = open_fds();
    cv_npy_array a;
    memset(&a, 0x5a, sizeof a);
    cv_err err = {{0}};
    cv_status st = cv_npy_read(p, &a, &err);
    cr_assert_eq(st, want, "%s: status %d, expected %d (%s)", name, st, want, err.msg);
    cr_assert(a.data == NULL && a.bytes == 0 && a.ndims == 0, "a rejected file left an array");
    cr_assert(strncmp(err.msg, p, strlen(p)) == 0, "message does not start with the path: %s",
              err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "expected '%s' in: %s", needle, err.msg);
    cr_assert(strchr(err.msg, '\n') == NULL, "message is more than one line: %s", err.msg);
    cr_assert_eq(open_fds(), before, "%s: %d descriptors left open", name, open_fds() - before);
}

/* A version-1.0 file of this header text (padded) and n zero payload bytes, rejected as
 * a format error naming needle. */
static void reject_header(const char *text, size_t n, const char *needle) {
    uint8_t *payload = calloc(1, n + 1);
    write_npy("bad.npy", 1, 0, text, true, payload, n);
    free(payload);
    expect_reject("bad.npy", CV_ERR_FORMAT, needle);
}

/* Reads name and checks its dtype and shape; returns the array (the caller frees it). */
static cv_npy_array expect_array(const char *name, cv_npy_dtype t, int ndims,
                                 const int64_t *dims) {
    char p[4096];
    path_of(p, name);
    int before = open_fds();
    cv_npy_array a;
    cv_err err;
    cr_assert_eq(cv_npy_read(p, &a, &err), CV_OK, "%s: %s", name, err.msg);
    cr_assert_eq(open_fds(), before, "%s: %d descriptors left open", name, open_fds() - before);
    cr_assert_eq(a.dtype, t, "%s: dtype %d, expected %d", name, a.dtype, t);
    cr_assert_eq(a.ndims, ndims, "%s: %d dims, expected %d", name, a.ndims, ndims);
    size_t bytes = cv_npy_item_size(t);
    for (int i = 0; i < ndims; i++) {
        cr_assert_eq(a.dims[i], dims[i], "%s: dim %d is %lld, expected %lld", name, i,
                     (long long)a.dims[i], (long long)dims[i]);
        bytes *= (size_t)dims[i];
    }
    cr_assert_eq(a.bytes, bytes, "%s: %zu bytes, expected %zu", name, a.bytes, bytes);
    return a;
}

/* A header variant that must be accepted: text (padded) over a known payload. */
static void accept_header(int major, const char *text, cv_npy_dtype t, int ndims,
                          const int64_t *dims) {
    size_t n = cv_npy_item_size(t);
    for (int i = 0; i < ndims; i++) n *= (size_t)dims[i];
    uint8_t *payload = malloc(n);
    for (size_t i = 0; i < n; i++) payload[i] = (uint8_t)(i * 7 + 3);
    write_npy("ok.npy", major, 0, text, true, payload, n);
    cv_npy_array a = expect_array("ok.npy", t, ndims, dims);
    cr_assert(memcmp(a.data, payload, n) == 0, "payload differs: %s", text);
    cv_npy_free(&a);
    free(payload);
}

/* --- the dtype table --- */

Test(npy, dtype_table) {
    static const char *descr[] = {"|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4"};
    static const size_t size[] = {1, 1, 2, 2, 4, 4, 8, 8, 4};
    for (int t = CV_NPY_U8; t <= CV_NPY_F32; t++) {
        cr_assert_str_eq(cv_npy_descr((cv_npy_dtype)t), descr[t]);
        cr_assert_eq(cv_npy_item_size((cv_npy_dtype)t), size[t]);
        cr_assert_eq(cv_npy_is_integer((cv_npy_dtype)t), t != CV_NPY_F32);
    }
}

/* --- writing, and reading back --- */

Test(npy, round_trip_every_dtype_and_rank) {
    test_rng r = test_rng_new("npy round trip");
    for (int t = CV_NPY_U8; t <= CV_NPY_F32; t++) {
        for (int nd = 1; nd <= CV_NPY_MAX_DIMS; nd++) {
            int64_t dims[CV_NPY_MAX_DIMS];
            size_t bytes = cv_npy_item_size((cv_npy_dtype)t);
            for (int i = 0; i < nd; i++) {
                dims[i] = 1 + (int64_t)test_uniform(&r, 0, 6);
                bytes *= (size_t)dims[i];
            }
            uint8_t *data = malloc(bytes);
            for (size_t i = 0; i < bytes; i++) data[i] = (uint8_t)test_uniform(&r, 0, 256);
            char p[4096];
            path_of(p, "rt.npy");
            cv_err err;
            int before = open_fds();
            cr_assert_eq(cv_npy_write(p, (cv_npy_dtype)t, nd, dims, data, &err), CV_OK, "%s",
                         err.msg);
            cr_assert_eq(open_fds(), before, "the writer left a descriptor open");
            cr_assert(cv_npy_sniff(p));
            size_t size;
            uint8_t *file = test_read_file(p, &size);
            cr_assert_eq((size - bytes) % 64, 0, "data starts at %zu", size - bytes);
            cr_assert(memcmp(file, "\x93NUMPY\x01\x00", 8) == 0, "not version 1.0");
            cr_assert_eq(file[size - bytes - 1], '\n');
            free(file);
            cv_npy_array a = expect_array("rt.npy", (cv_npy_dtype)t, nd, dims);
            cr_assert(memcmp(a.data, data, bytes) == 0, "%s x %d dims differs", cv_npy_descr(t),
                      nd);
            cv_npy_free(&a);
            cr_assert_null(a.data);
            free(data);
        }
    }
}

Test(npy, header_is_exactly_what_numpy_writes) {
    char buf[CV_NPY_HEADER_MAX];
    int64_t dims[2] = {3, 4};
    size_t n = cv_npy_header(buf, sizeof buf, CV_NPY_F32, 2, dims);
    const char *d = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
    cr_assert_eq(n, 128);
    cr_assert(memcmp(buf, "\x93NUMPY\x01\x00\x76\x00", 10) == 0, "bad preamble");
    cr_assert(memcmp(buf + 10, d, strlen(d)) == 0, "dict is %.*s", (int)(n - 10), buf + 10);
    for (size_t i = 10 + strlen(d); i < n - 1; i++) cr_assert_eq(buf[i], ' ');
    cr_assert_eq(buf[n - 1], '\n');
    int64_t one[1] = {7};
    n = cv_npy_header(buf, sizeof buf, CV_NPY_U8, 1, one);
    d = "{'descr': '|u1', 'fortran_order': False, 'shape': (7,), }";
    cr_assert(n == 128 && memcmp(buf + 10, d, strlen(d)) == 0, "1-d dict is %.*s",
              (int)(n - 10), buf + 10);
    /* the largest shape fits CV_NPY_HEADER_MAX; a buffer one byte short gets 0 */
    int64_t big[4] = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
    n = cv_npy_header(buf, sizeof buf, CV_NPY_I64, 4, big);
    cr_assert(n > 0 && n % 64 == 0);
    cr_assert_eq(cv_npy_header(buf, n - 1, CV_NPY_I64, 4, big), 0);
    cr_assert_eq(cv_npy_header(buf, n, CV_NPY_I64, 4, big), n);
}

Test(npy, write_refuses_shapes_the_reader_would_and_writes_nothing) {
    char p[4096];
    path_of(p, "w.npy");
    uint8_t data[16] = {0};
    cv_err err;
    int64_t zero[2] = {3, 0}, huge[1] = {(int64_t)INT32_MAX + 1},
            absurd[4] = {INT32_MAX, INT32_MAX, INT32_MAX, 2};
    cr_assert_eq(cv_npy_write(p, CV_NPY_U8, 2, zero, data, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "dimension 1 is 0") != NULL, "%s", err.msg);
    cr_assert_eq(cv_npy_write(p, CV_NPY_U8, 1, huge, data, &err), CV_ERR_USAGE);
    cr_assert_eq(cv_npy_write(p, CV_NPY_U8, 4, absurd, data, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "bytes") != NULL, "%s", err.msg);
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        cr_assert(e->d_name[0] == '.', "a refused write left %s", e->d_name);
    closedir(d);
    char q[4200];
    snprintf(q, sizeof q, "%s/no/such/folder/w.npy", dir);
    int64_t ok[1] = {4};
    cr_assert_eq(cv_npy_write(q, CV_NPY_U8, 1, ok, data, &err), CV_ERR_IO);
    cr_assert(strstr(err.msg, q) != NULL, "%s", err.msg);
}

Test(npy, write_replaces_an_existing_file_whole) {
    char p[4096];
    path_of(p, "w.npy");
    test_write_file(p, "old contents", 12);
    float x[3] = {1.5f, -2.0f, 0.25f};
    int64_t dims[1] = {3};
    cv_err err;
    cr_assert_eq(cv_npy_write(p, CV_NPY_F32, 1, dims, x, &err), CV_OK, "%s", err.msg);
    cv_npy_array a = expect_array("w.npy", CV_NPY_F32, 1, dims);
    cr_assert(memcmp(a.data, x, sizeof x) == 0);
    cv_npy_free(&a);
}

Test(npy, sniff) {
    char p[4096];
    int64_t dims[1] = {2};
    uint8_t data[2] = {1, 2};
    cv_err err;
    path_of(p, "a.npy");
    cr_assert_eq(cv_npy_write(p, CV_NPY_U8, 1, dims, data, &err), CV_OK);
    cr_assert(cv_npy_sniff(p));
    /* a file too short for the whole magic is a .npy when what it has is the magic's
     * start, so that the .npy reader calls it truncated */
    path_of(p, "short");
    test_write_file(p, "\x93NUM", 4);
    cr_assert(cv_npy_sniff(p));
    test_write_file(p, "\x93", 1);
    cr_assert(cv_npy_sniff(p));
    test_write_file(p, "\x93NUX", 4);
    cr_assert_not(cv_npy_sniff(p));
    test_write_file(p, "", 0);
    cr_assert_not(cv_npy_sniff(p));
    path_of(p, "idx");
    test_write_file(p, "\x00\x00\x08\x01\x00\x00\x00\x01\x05", 9);
    cr_assert_not(cv_npy_sniff(p));
    path_of(p, "missing");
    cr_assert_not(cv_npy_sniff(p));
    path_of(p, "sub");
    mkdir(p, 0777);
    cr_assert_not(cv_npy_sniff(p));
    path_of(p, "fifo");
    cr_assert_eq(mkfifo(p, 0666), 0);
    cr_assert_not(cv_npy_sniff(p)); /* and does not wait for a writer */
}

/* --- what NumPy writes --- */

/* Byte for byte what NumPy 1.24 writes for np.arange(6, dtype='<i2').reshape(2, 3) - 3
 * (version 1.0), np.arange(4, dtype='<u4') * 1000 (2.0), and
 * (np.arange(4, dtype='<f4') - 1.5).reshape(2, 1, 2) (3.0): np.lib.format.write_array. */
static const char v1_file[] =
    "\x93NUMPY\x01\x00v\x00"
    "{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }"
    "                                                          \n"
    "\xfd\xff\xfe\xff\xff\xff\x00\x00\x01\x00\x02\x00";
static const char v2_file[] =
    "\x93NUMPY\x02\x00t\x00\x00\x00"
    "{'descr': '<u4', 'fortran_order': False, 'shape': (4,), }"
    "                                                          \n"
    "\x00\x00\x00\x00\xe8\x03\x00\x00\xd0\x07\x00\x00\xb8\x0b\x00\x00";
static const char v3_file[] =
    "\x93NUMPY\x03\x00t\x00\x00\x00"
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2), }"
    "                                                     \n"
    "\x00\x00\xc0\xbf\x00\x00\x00\xbf\x00\x00\x00\x3f\x00\x00\xc0\x3f";

Test(npy, reads_numpy_byte_vectors_of_versions_1_2_and_3) {
    char p[4096];
    path_of(p, "v1.npy");
    test_write_file(p, v1_file, sizeof v1_file - 1);
    path_of(p, "v2.npy");
    test_write_file(p, v2_file, sizeof v2_file - 1);
    path_of(p, "v3.npy");
    test_write_file(p, v3_file, sizeof v3_file - 1);
    cv_npy_array a = expect_array("v1.npy", CV_NPY_I16, 2, (int64_t[]){2, 3});
    for (int i = 0; i < 6; i++) cr_assert_eq(((int16_t *)a.data)[i], i - 3);
    cv_npy_free(&a);
    a = expect_array("v2.npy", CV_NPY_U32, 1, (int64_t[]){4});
    for (int i = 0; i < 4; i++) cr_assert_eq(((uint32_t *)a.data)[i], 1000u * (unsigned)i);
    cv_npy_free(&a);
    a = expect_array("v3.npy", CV_NPY_F32, 3, (int64_t[]){2, 1, 2});
    for (int i = 0; i < 4; i++) cr_assert_eq(((float *)a.data)[i], (float)i - 1.5f);
    cv_npy_free(&a);
}

/* Runs /usr/bin/python3 -c script arg; returns its exit status (127: python3 missing). */
static int run_python(const char *script, const char *arg) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork failed");
    if (pid == 0) {
        execl("/usr/bin/python3", "python3", "-c", script, arg, (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Fails the test, loudly, where NumPy cannot be imported: these files must come from the
 * real NumPy, and a test that skipped them would pass without checking anything. */
static void require_numpy(void) {
    int rc = run_python("import numpy", "");
    cr_assert_eq(rc, 0, "/usr/bin/python3 cannot import numpy (exit %d): install python3-numpy "
                 "(apt-get install python3-numpy) to run the NumPy interoperability tests", rc);
}

/* One array per dtype and 1..4 dimensions, values (i - n/2) for signed types, i for
 * unsigned, (i - n/2) / 2 for float32, in every version NumPy writes; plus the arrays the
 * reader must refuse. */
static const char numpy_writer[] =
    "import sys, numpy as np\n"
    "d = sys.argv[1]\n"
    "cases = [('|u1', (3, 4, 5)), ('|i1', (7,)), ('<u2', (2, 3)), ('<i2', (2, 2, 2, 2)),\n"
    "         ('<u4', (5, 1)), ('<i4', (1, 6)), ('<u8', (3,)), ('<i8', (2, 3, 4)),\n"
    "         ('<f4', (4, 5))]\n"
    "for v in [(1, 0), (2, 0), (3, 0)]:\n"
    "    for dt, shape in cases:\n"
    "        n = int(np.prod(shape))\n"
    "        i = np.arange(n)\n"
    "        x = i if dt[1] == 'u' else (i - n // 2) / 2 if dt[1] == 'f' else i - n // 2\n"
    "        a = x.astype(dt).reshape(shape)\n"
    "        with open('%s/np-%d-%s.npy' % (d, v[0], dt[1:]), 'wb') as f:\n"
    "            np.lib.format.write_array(f, a, version=v)\n"
    "bad = {'fortran': np.asfortranarray(np.zeros((2, 3), '<f4')),\n"
    "       'big': np.zeros(3, '>f4'), 'f64': np.zeros((2, 2)),\n"
    "       'struct': np.zeros(2, dtype=[('a', '<f4'), ('b', '<i4')]),\n"
    "       'scalar': np.array(5, '<f4'), 'empty': np.zeros((0, 3), '<f4'),\n"
    "       'bool': np.zeros(3, bool), 'five': np.zeros((1, 2, 1, 2, 1), '<f4')}\n"
    "for name, a in bad.items():\n"
    "    np.save('%s/bad-%s.npy' % (d, name), a)\n";

static double numpy_value(cv_npy_dtype t, const cv_npy_array *a, size_t i) {
    const void *p = (const uint8_t *)a->data + i * cv_npy_item_size(t);
    switch (t) {
    case CV_NPY_U8: return *(const uint8_t *)p;
    case CV_NPY_I8: return *(const int8_t *)p;
    case CV_NPY_U16: return *(const uint16_t *)p;
    case CV_NPY_I16: return *(const int16_t *)p;
    case CV_NPY_U32: return *(const uint32_t *)p;
    case CV_NPY_I32: return *(const int32_t *)p;
    case CV_NPY_U64: return (double)*(const uint64_t *)p;
    case CV_NPY_I64: return (double)*(const int64_t *)p;
    case CV_NPY_F32: return *(const float *)p;
    }
    return 0;
}

Test(npy, reads_what_numpy_writes_in_versions_1_2_and_3) {
    require_numpy();
    cr_assert_eq(run_python(numpy_writer, dir), 0, "the NumPy script failed");
    static const int64_t shapes[9][4] = {{3, 4, 5}, {7}, {2, 3}, {2, 2, 2, 2}, {5, 1},
                                         {1, 6}, {3}, {2, 3, 4}, {4, 5}};
    static const int ranks[9] = {3, 1, 2, 4, 2, 2, 1, 3, 2};
    for (int v = 1; v <= 3; v++) {
        for (int t = CV_NPY_U8; t <= CV_NPY_F32; t++) {
            char name[64];
            snprintf(name, sizeof name, "np-%d-%s.npy", v, cv_npy_descr(t) + 1);
            cv_npy_array a = expect_array(name, (cv_npy_dtype)t, ranks[t], shapes[t]);
            size_t n = a.bytes / cv_npy_item_size(t);
            for (size_t i = 0; i < n; i++) {
                double k = (double)i - (double)(n / 2), want = k;
                if (t == CV_NPY_F32) want = k / 2;
                else if (cv_npy_descr(t)[1] == 'u') want = (double)i;
                cr_assert_eq(numpy_value(t, &a, i), want, "%s[%zu]", name, i);
            }
            cv_npy_free(&a);
        }
    }
    expect_reject("bad-fortran.npy", CV_ERR_FORMAT, "Fortran order is not supported");
    expect_reject("bad-big.npy", CV_ERR_FORMAT, "big-endian");
    expect_reject("bad-f64.npy", CV_ERR_FORMAT, "float64");
    expect_reject("bad-struct.npy", CV_ERR_FORMAT, "structured");
    expect_reject("bad-scalar.npy", CV_ERR_FORMAT, "0-d");
    expect_reject("bad-empty.npy", CV_ERR_FORMAT, "holds no elements");
    expect_reject("bad-bool.npy", CV_ERR_FORMAT, "unsupported dtype '|b1'");
    expect_reject("bad-five.npy", CV_ERR_FORMAT, "has 5 dimensions");
}

/* NumPy loads every file cv_npy_write makes with the dtype, shape and bytes written, and
 * the dict NumPy writes is the one cv_npy_header writes. */
static const char numpy_reader[] =
    "import sys, glob, numpy as np\n"
    "for p in sorted(glob.glob(sys.argv[1] + '/c-*.npy')):\n"
    "    a = np.load(p)\n"
    "    assert a.flags.c_contiguous\n"
    "    open(p + '.txt', 'w').write('%s %s' % (a.dtype.str, a.shape))\n"
    "    open(p + '.raw', 'wb').write(a.tobytes())\n"
    "    np.save(p + '.np.npy', a)\n";

Test(npy, numpy_reads_what_cvae_writes) {
    require_numpy();
    test_rng r = test_rng_new("npy for numpy");
    static const int64_t dims[4] = {3, 1, 4, 2};
    static const char *shape[4] = {"(3,)", "(3, 1)", "(3, 1, 4)", "(3, 1, 4, 2)"};
    uint8_t data[3 * 4 * 2 * 8];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int t = CV_NPY_U8; t <= CV_NPY_F32; t++) {
        char p[4096], name[64];
        snprintf(name, sizeof name, "c-%s-%d.npy", cv_npy_descr(t) + 1, t % 4 + 1);
        path_of(p, name);
        cv_err err;
        cr_assert_eq(cv_npy_write(p, (cv_npy_dtype)t, t % 4 + 1, dims, data, &err), CV_OK);
    }
    cr_assert_eq(run_python(numpy_reader, dir), 0, "NumPy could not load a file cvae wrote");
    for (int t = CV_NPY_U8; t <= CV_NPY_F32; t++) {
        int nd = t % 4 + 1;
        char p[4300], name[64], want[64];
        snprintf(name, sizeof name, "c-%s-%d.npy", cv_npy_descr(t) + 1, nd);
        size_t n, bytes = cv_npy_item_size(t) * 3 * (nd > 2 ? 4 : 1) * (nd > 3 ? 2 : 1);
        snprintf(p, sizeof p, "%s/%s.txt", dir, name);
        char *txt = (char *)test_read_file(p, &n);
        snprintf(want, sizeof want, "%s %s", cv_npy_descr(t), shape[nd - 1]);
        cr_assert(txt && strcmp(txt, want) == 0, "NumPy saw '%s', expected '%s'", txt, want);
        free(txt);
        snprintf(p, sizeof p, "%s/%s.raw", dir, name);
        uint8_t *raw = test_read_file(p, &n);
        cr_assert(n == bytes && memcmp(raw, data, bytes) == 0, "NumPy read other bytes");
        free(raw);
        /* NumPy's own file of that array: the same dict, up to the padding */
        snprintf(p, sizeof p, "%s/%s.np.npy", dir, name);
        uint8_t *np_file = test_read_file(p, &n);
        char ours[CV_NPY_HEADER_MAX];
        size_t len = cv_npy_header(ours, sizeof ours, (cv_npy_dtype)t, nd, dims);
        size_t dict_len = (size_t)((char *)memchr(ours, '}', len) - ours) + 1;
        cr_assert(len > 0 && n > dict_len && memcmp(np_file, ours, dict_len) == 0,
                  "NumPy's header %.*s differs from %.*s", (int)dict_len - 10,
                  (char *)np_file + 10, (int)dict_len - 10, ours + 10);
        free(np_file);
    }
}

/* --- header spellings the literal allows --- */

Test(npy, accepts_the_spellings_of_the_python_literal) {
    int64_t d23[2] = {2, 3}, d5[1] = {5}, d4[4] = {1, 2, 1, 3};
    accept_header(1, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3)}",
                  CV_NPY_F32, 2, d23);
    accept_header(1, "{'shape': (2, 3), 'fortran_order': False, 'descr': '<i4'}", CV_NPY_I32,
                  2, d23);
    accept_header(1, "{'fortran_order': False, 'shape': (5,), 'descr': '|u1', }", CV_NPY_U8, 1,
                  d5);
    accept_header(1, "  {  'descr'  :  '<u2' ,\t'fortran_order':False,'shape':( 5 , ) ,  }",
                  CV_NPY_U16, 1, d5);
    accept_header(1, "{'descr':'<i8','fortran_order':False,'shape':(1,2,1,3,)}", CV_NPY_I64,
                  4, d4);
    accept_header(1, "{'descr': '<u1', 'fortran_order': False, 'shape': (5,)}", CV_NPY_U8, 1,
                  d5);
    accept_header(1, "{'descr': '<i1', 'fortran_order': False, 'shape': (2, 3)}", CV_NPY_I8, 2,
                  d23);
    accept_header(2, "{'descr': \"<u8\",\n 'fortran_order': False,\n 'shape': (5,)\n}",
                  CV_NPY_U64, 1, d5);
}

/* --- rejections: the preamble --- */

Test(npy, rejects_bad_magic) {
    char p[4096];
    path_of(p, "magic.npy");
    test_write_file(p, "\x93NUMPZ\x01\x00\x10\x00{}              \n", 26);
    expect_reject("magic.npy", CV_ERR_FORMAT, "not a .npy file (bad magic)");
    test_write_file(p, "\x93NX", 3);
    expect_reject("magic.npy", CV_ERR_FORMAT, "bad magic");
    test_write_file(p, "", 0);
    expect_reject("magic.npy", CV_ERR_FORMAT, "bad magic");
    /* an IDX file given as a .npy */
    test_write_file(p, "\x00\x00\x08\x01\x00\x00\x00\x01\x05", 9);
    expect_reject("magic.npy", CV_ERR_FORMAT, "bad magic");
}

Test(npy, rejects_unknown_versions) {
    write_npy("v.npy", 4, 0, dict("<f4", "(1,)"), true, "\0\0\0\0", 4);
    expect_reject("v.npy", CV_ERR_FORMAT, "unsupported .npy version 4.0");
    write_npy("v.npy", 1, 1, dict("<f4", "(1,)"), true, "\0\0\0\0", 4);
    expect_reject("v.npy", CV_ERR_FORMAT, "version 1.1");
    write_npy("v.npy", 0, 0, dict("<f4", "(1,)"), true, "\0\0\0\0", 4);
    expect_reject("v.npy", CV_ERR_FORMAT, "version 0.0");
}

Test(npy, rejects_truncated_preamble) {
    char p[4096];
    path_of(p, "pre.npy");
    test_write_file(p, "\x93NU", 3);
    expect_reject("pre.npy", CV_ERR_FORMAT, "truncated header (3 of 8 bytes present)");
    test_write_file(p, "\x93NUMPY\x01", 7);
    expect_reject("pre.npy", CV_ERR_FORMAT, "truncated header (7 of 8 bytes present)");
    test_write_file(p, "\x93NUMPY\x01\x00\x10", 9);
    expect_reject("pre.npy", CV_ERR_FORMAT, "truncated header (1 of 2 bytes present)");
    test_write_file(p, "\x93NUMPY\x02\x00\x10\x00\x00", 11);
    expect_reject("pre.npy", CV_ERR_FORMAT, "truncated header (3 of 4 bytes present)");
}

/* The v1 file of dict("<f4", "(2,)") with its header length field set to hlen. */
static void write_with_length(int major, uint32_t hlen) {
    write_npy("len.npy", major, 0, dict("<f4", "(2,)"), true, "\0\0\0\0\0\0\0\0", 8);
    char p[4096];
    path_of(p, "len.npy");
    size_t n;
    uint8_t *b = test_read_file(p, &n);
    for (int i = 0; i < (major == 1 ? 2 : 4); i++) b[8 + i] = (uint8_t)(hlen >> (8 * i));
    test_write_file(p, b, n);
    free(b);
}

Test(npy, rejects_header_length_beyond_the_file) {
    write_with_length(1, 60000);
    expect_reject("len.npy", CV_ERR_FORMAT, "header length 60000 runs past the end of the file");
    write_with_length(2, 1000);
    expect_reject("len.npy", CV_ERR_FORMAT, "runs past the end of the file (136 bytes)");
}

Test(npy, rejects_header_length_zero_and_huge) {
    write_with_length(1, 0);
    expect_reject("len.npy", CV_ERR_FORMAT, "header length is 0");
    write_with_length(3, 0);
    expect_reject("len.npy", CV_ERR_FORMAT, "header length is 0");
    write_with_length(2, 0xfffffff0u);
    expect_reject("len.npy", CV_ERR_FORMAT, "header length 4294967280 is over 1048576 bytes");
}

Test(npy, rejects_header_length_that_cuts_the_dict) {
    /* a length short of the dict: what is left does not end in '\n' */
    write_with_length(1, 30);
    expect_reject("len.npy", CV_ERR_FORMAT, "header does not end with a newline");
}

/* --- rejections: the header text --- */

Test(npy, rejects_non_ascii_bytes) {
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } \xc3\xa9", 8,
                  "non-ASCII byte 0xc3 at header offset 58");
    reject_header("{'descr': '<f\xb4', 'fortran_order': False, 'shape': (2,), }", 8,
                  "non-ASCII byte 0xb4");
    uint8_t z[8] = {0};
    write_npy("v3.npy", 3, 0, "{'d\xc3\xa9scr': '<f4', 'fortran_order': False, 'shape': (2,)}",
              true, z, 8);
    expect_reject("v3.npy", CV_ERR_FORMAT, "non-ASCII byte 0xc3");
}

Test(npy, rejects_missing_newline) {
    uint8_t z[8] = {0};
    write_npy("nl.npy", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }   ",
              false, z, 8);
    expect_reject("nl.npy", CV_ERR_FORMAT, "does not end with a newline");
}

Test(npy, rejects_missing_keys) {
    reject_header("{'descr': '<f4', 'fortran_order': False}", 0, "no 'shape' key");
    reject_header("{'descr': '<f4', 'shape': (2,)}", 8, "no 'fortran_order' key");
    reject_header("{'fortran_order': False, 'shape': (2,)}", 8, "no 'descr' key");
    reject_header("{}", 0, "no 'descr' key");
}

Test(npy, rejects_duplicate_key) {
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'descr': '<f4'}",
                  8, "key 'descr' appears twice");
    reject_header("{'shape': (2,), 'descr': '<f4', 'fortran_order': False, \"shape\": (2,)}",
                  8, "key 'shape' appears twice");
}

Test(npy, rejects_unknown_key) {
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'order': 'C'}", 8,
                  "unknown key 'order'");
    reject_header("{'descr': '<f4', 'Fortran_order': False, 'shape': (2,)}", 8,
                  "unknown key 'Fortran_order'");
}

Test(npy, rejects_fortran_order) {
    reject_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
                  "Fortran order is not supported; save np.ascontiguousarray(a)");
    reject_header("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", 8,
                  "'fortran_order' must be False or True, found '0'");
    reject_header("{'descr': '<f4', 'fortran_order': 'False', 'shape': (2,), }", 8,
                  "must be False or True, found the string 'False'");
    reject_header("{'descr': '<f4', 'fortran_order': false, 'shape': (2,), }", 8,
                  "must be False or True, found 'false'");
}

Test(npy, rejects_big_endian_with_the_fix) {
    reject_header(dict(">f4", "(2,)"), 8,
                  "dtype '>f4' is big-endian, which is not supported; save a.astype('<f4')");
    reject_header(dict(">i2", "(2,)"), 4, "save a.astype('<i2')");
    reject_header(dict(">f8", "(2,)"), 16, "'>f8' is big-endian");
}

Test(npy, rejects_float64_with_the_fix) {
    reject_header(dict("<f8", "(2,)"), 16,
                  "dtype '<f8' (float64) is not supported; save a.astype(np.float32)");
}

Test(npy, rejects_native_and_unknown_descrs) {
    reject_header(dict("=u2", "(2,)"), 4, "dtype '=u2' has native byte order");
    reject_header(dict("<c8", "(2,)"), 16, "unsupported dtype '<c8' (supported: |u1 |i1");
    reject_header(dict("|b1", "(2,)"), 2, "unsupported dtype '|b1'");
    reject_header(dict("|u2", "(2,)"), 4, "unsupported dtype '|u2'");
    reject_header(dict("<f2", "(2,)"), 4, "unsupported dtype '<f2'");
    reject_header(dict("<U3", "(2,)"), 24, "unsupported dtype '<U3'");
    reject_header(dict("", "(2,)"), 8, "unsupported dtype ''");
    reject_header(dict("<f4 ", "(2,)"), 8, "unsupported dtype '<f4 '");
    reject_header(dict("O", "(2,)"), 16, "unsupported dtype 'O'");
    reject_header("{'descr': 4, 'fortran_order': False, 'shape': (2,), }", 8,
                  "'descr' must be a quoted dtype, found '4'");
}

Test(npy, rejects_structured_descr) {
    reject_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
                  "structured dtypes");
}

Test(npy, rejects_0d_shape) {
    reject_header(dict("<f4", "()"), 4, "0-d array (shape ())");
    reject_header(dict("<f4", "( )"), 4, "0-d array");
}

Test(npy, rejects_more_than_4_dims) {
    reject_header(dict("<f4", "(1, 1, 1, 1, 1)"), 4, "has 5 dimensions (at most 4");
    reject_header(dict("<f4", "(1, 1, 1, 1, 1, 1, 1, 1, 1,)"), 4, "has 9 dimensions");
}

Test(npy, rejects_negative_dim) {
    reject_header(dict("<f4", "(2, -3)"), 4, "shape dimension 1 is negative (-3)");
    reject_header(dict("<f4", "(-1,)"), 4, "dimension 0 is negative");
}

Test(npy, rejects_zero_dim) {
    reject_header(dict("<f4", "(3, 0, 2)"), 0, "holds no elements (shape dimension 1 is 0)");
    reject_header(dict("|u1", "(0,)"), 0, "holds no elements");
}

Test(npy, rejects_dim_over_int32_max) {
    reject_header(dict("|u1", "(2147483648,)"), 0,
                  "shape dimension 0 is 2147483648 (at most 2147483647");
    reject_header(dict("|u1", "(3, 99999999999999999999999999)"), 0,
                  "dimension 1 is 99999999999999999999999999");
}

Test(npy, rejects_overflowing_product_before_allocating) {
    reject_header(dict("<f4", "(2147483647, 2147483647, 2147483647, 2147483647)"), 0,
                  "shape is absurd (the payload would exceed 1099511627776 bytes)");
    reject_header(dict("<i8", "(1048576, 131073)"), 0, "absurd");
    /* within the bound: refused for its size before anything is allocated */
    reject_header(dict("|u1", "(1000000, 1000000)"), 5,
                  "truncated (5 of 1000000000000 payload bytes present)");
    reject_header(dict("|u1", "(2147483647,)"), 0, "truncated (0 of 2147483647 payload");
}

Test(npy, rejects_non_integer_dims) {
    reject_header(dict("<f4", "(2.5,)"), 8, "a number that is not a decimal integer");
    reject_header(dict("<f4", "(2, 3L)"), 24, "not a decimal integer");
    reject_header(dict("<f4", "(0x10,)"), 64, "not a decimal integer");
    reject_header(dict("<f4", "(05,)"), 20, "leading zero");
    reject_header(dict("<f4", "(n,)"), 8, "shape dimension 0 is 'n', not an integer");
    reject_header(dict("<f4", "('2',)"), 8, "is the string '2', not an integer");
    reject_header(dict("<f4", "(None,)"), 8, "'None', not an integer");
    reject_header(dict("<f4", "(+2,)"), 8, "unexpected character '+'");
}

Test(npy, rejects_shapes_that_are_not_tuples) {
    reject_header(dict("<f4", "(5)"), 20, "shape (5) is not a tuple");
    reject_header(dict("<f4", "[5]"), 20, "'shape' must be a tuple such as (5, 3), found '['");
    reject_header(dict("<f4", "5"), 20, "must be a tuple");
    reject_header(dict("<f4", "(5 3)"), 60, "expected ',' or ')' in the shape, found '3'");
    reject_header(dict("<f4", "(,)"), 0, "shape dimension 0 is ','");
    reject_header(dict("<f4", "(5,,)"), 20, "shape dimension 1 is ','");
    reject_header(dict("<f4", "(5, 3"), 60, "shape dimension 2 is '}', not an integer");
}

Test(npy, rejects_truncated_payload) {
    uint8_t z[24] = {0};
    write_npy("t.npy", 1, 0, dict("<f4", "(2, 3)"), true, z, 23);
    expect_reject("t.npy", CV_ERR_FORMAT, "truncated (23 of 24 payload bytes present)");
    write_npy("t.npy", 2, 0, dict("<i8", "(3,)"), true, z, 0);
    expect_reject("t.npy", CV_ERR_FORMAT, "truncated (0 of 24 payload bytes present)");
}

Test(npy, rejects_trailing_bytes) {
    uint8_t z[32] = {0};
    write_npy("t.npy", 1, 0, dict("<f4", "(2, 3)"), true, z, 25);
    expect_reject("t.npy", CV_ERR_FORMAT, "trailing bytes (1 after the 24-byte payload)");
}

Test(npy, rejects_garbage_after_the_dict) {
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", 8,
                  "something other than spaces after '}'");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\t", 8,
                  "after '}'");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n  ", 8,
                  "after '}'");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }}", 8,
                  "after '}'");
}

Test(npy, rejects_garbage_in_the_dict) {
    reject_header("'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8,
                  "expected '{' at the start of the header, found the string 'descr'");
    reject_header("{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
                  "expected ':' after the key 'descr', found the string '<f4'");
    reject_header("{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", 8,
                  "expected ',' or '}' after a value, found the string 'fortran_order'");
    reject_header("{'descr': '<f4',, 'fortran_order': False, 'shape': (2,)}", 8,
                  "expected a quoted key or '}', found ','");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8,
                  "found the end of the header");
    reject_header("{descr: '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
                  "expected a quoted key or '}', found 'descr'");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x}", 8,
                  "unterminated string");
    reject_header("{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}", 8,
                  "escape sequence in a string");
    reject_header("{'descr': '<f4\", 'fortran_order': False, 'shape': (2,)}", 8,
                  "unsupported dtype '<f4\", '");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)\1}", 8,
                  "unexpected byte 0x01 at header offset");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,); }", 8,
                  "unexpected character ';'");
    reject_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), , }", 8,
                  "expected a quoted key or '}', found ','");
}

/* The file of this header text with a NUL at offset `at` (the C string helpers above
 * cannot write one), rejected naming needle. */
static void reject_nul_at(size_t at, const char *needle) {
    char text[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}  \n";
    text[at] = '\0';
    uint8_t b[10 + sizeof text - 1 + 8];
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (uint8_t)(sizeof text - 1);
    b[9] = 0;
    memcpy(b + 10, text, sizeof text - 1);
    memset(b + 10 + sizeof text - 1, 0, 8);
    char p[4096];
    path_of(p, "nul.npy");
    test_write_file(p, b, sizeof b);
    expect_reject("nul.npy", CV_ERR_FORMAT, needle);
}

Test(npy, rejects_nul_in_the_header) {
    reject_nul_at(3, "control byte in a string");
    reject_nul_at(0, "unexpected byte 0x00 at header offset 0");
    reject_nul_at(8, "unexpected byte 0x00 at header offset 8");
    reject_nul_at(56, "something other than spaces after '}' at header offset 56");
}

/* --- rejections: the path --- */

Test(npy, rejects_folder_missing_file_and_fifo) {
    char p[4096];
    path_of(p, "sub");
    mkdir(p, 0777);
    expect_reject("sub", CV_ERR_IO, "is a folder, not a .npy file");
    expect_reject("missing.npy", CV_ERR_IO, "cannot open: No such file or directory");
    path_of(p, "fifo");
    cr_assert_eq(mkfifo(p, 0666), 0);
    expect_reject("fifo", CV_ERR_IO, "is not a regular file");
}

/* Every rejection above, many times over, leaves exactly the descriptors it found (each
 * expect_reject checks its own call too). */
Test(npy, no_descriptor_leak_over_the_rejections) {
    static const char *texts[] = {
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<f4' 'fortran_order': False, 'shape': (2,), }",
        "garbage",
    };
    char p[4096];
    path_of(p, "sub");
    mkdir(p, 0777);
    int before = open_fds();
    uint8_t z[8] = {0};
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            write_npy("x.npy", 1 + (int)(i % 3), 0, texts[i], true, z, 8);
            path_of(p, "x.npy");
            cv_npy_array a;
            cv_err err;
            cv_status st = cv_npy_read(p, &a, &err);
            cr_assert_eq(st == CV_OK, i == 5, "%s: %s", texts[i], err.msg);
            cv_npy_free(&a);
            cr_assert_eq(cv_npy_sniff(p), true);
        }
        path_of(p, "sub");
        cv_npy_array a;
        cv_err err;
        cr_assert_eq(cv_npy_read(p, &a, &err), CV_ERR_IO);
        path_of(p, "missing");
        cr_assert_eq(cv_npy_read(p, &a, &err), CV_ERR_IO);
    }
    cr_assert_eq(open_fds(), before, "%d descriptors left open", open_fds() - before);
}
