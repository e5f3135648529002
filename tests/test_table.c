/* test_table.c: tables of images (src/host/data/table.c, image_table.c): CSV and
 * whitespace fields, quoting, CelebA's attribute and partition files as distributed, the
 * rules that pick the condition, and every refusal naming the file, the line and the
 * column. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "data/image_set.h"
#include "data/table.h"
#include "helpers.h"

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(table, .init = setup, .fini = teardown);

static cv_status parse(const char *text, cv_table *t, cv_err *err) {
    const size_t len = strlen(text);
    char *copy = malloc(len + 1);
    memcpy(copy, text, len + 1);
    err->msg[0] = '\0';
    return cv_table_parse("t.csv", copy, len, t, err);
}

static void expect_refused(const char *text, const char *needle) {
    cv_table t;
    cv_err err;
    cr_assert_neq(parse(text, &t, &err), CV_OK, "accepted: %s", text);
    cr_assert(strstr(err.msg, "t.csv: ") == err.msg, "the line does not name the file: %s",
              err.msg);
    cr_assert(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
}

Test(table, csv_fields_quotes_and_spaces) {
    cv_table t;
    cv_err err;
    cr_assert_eq(parse("\xef\xbb\xbfimage, label ,note\r\n"
                       "\r\n"
                       "a.png,cat,\"one, two\"\r\n"
                       "  \"b \"\"x\"\".png\" , dog ,  \n"
                       "c d.png,\"\",plain",
                       &t, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(t.n_cols, 3);
    cr_assert_str_eq(t.names[0], "image");
    cr_assert_str_eq(t.names[1], "label");
    cr_assert_eq(t.n_rows, 3);
    cr_assert_str_eq(cv_table_cell(&t, 0, 2), "one, two");
    cr_assert_str_eq(cv_table_cell(&t, 1, 0), "b \"x\".png");
    cr_assert_str_eq(cv_table_cell(&t, 1, 1), "dog");
    cr_assert_str_eq(cv_table_cell(&t, 1, 2), "");
    cr_assert_str_eq(cv_table_cell(&t, 2, 0), "c d.png");
    cr_assert_str_eq(cv_table_cell(&t, 2, 1), "");
    cr_assert(t.line[0] == 3 && t.line[1] == 4 && t.line[2] == 5, "line numbers");
    cr_assert(!t.celeba);
    cv_table_free(&t);
}

Test(table, whitespace_fields) {
    cv_table t;
    cv_err err;
    cr_assert_eq(parse("image\tSmiling  Young\n a.jpg\t-1   1\nb.jpg 1\t\t-1   \n", &t, &err),
                 CV_OK, "%s", err.msg);
    cr_assert(t.n_cols == 3 && t.n_rows == 2);
    cr_assert_str_eq(t.names[2], "Young");
    cr_assert_str_eq(cv_table_cell(&t, 1, 1), "1");
    cr_assert_str_eq(cv_table_cell(&t, 1, 2), "-1");
    cv_table_free(&t);
}

/* list_attr_celeba.txt as distributed: the count, 40 names (with a trailing space), then
 * rows of the image and 40 values padded with spaces, CR LF line ends. */
Test(table, celeba_attribute_layout) {
    cv_table t;
    cv_err err;
    cr_assert_eq(parse("2\r\n5_o_Clock_Shadow Smiling Young \r\n"
                       "000001.jpg -1  1  1\r\n000002.jpg -1 -1  1\r\n",
                       &t, &err), CV_OK, "%s", err.msg);
    cr_assert(t.celeba && t.n_cols == 4 && t.n_rows == 2);
    cr_assert_str_eq(t.names[0], "image");
    cr_assert_str_eq(t.names[2], "Smiling");
    cr_assert_str_eq(cv_table_cell(&t, 1, 0), "000002.jpg");
    cr_assert_str_eq(cv_table_cell(&t, 1, 2), "-1");
    cv_table_free(&t);
    expect_refused("3\nA B\nx.jpg 1 1\ny.jpg 1 -1\n", "says 3 rows, but it holds 2 (cut short?)");
}

Test(table, malformed_tables_name_the_line) {
    expect_refused("", "is empty");
    expect_refused("image,label\n", "has a header and no rows");
    expect_refused("image,label,x\na.png,1\n", "line 2: no value for column 'x' (the row has 2 "
                   "fields, the header names 3 columns)");
    expect_refused("image label\na.png 1 2\n", "line 2: 3 fields, but the header names 2");
    expect_refused("image,label\na.png,\"cat\n", "line 2: a quoted field is not closed");
    expect_refused("image,label\na.png,\"cat\"x\n", "line 2: text after a closing quote");
    expect_refused("image,label,label\na.png,1,2\n", "line 1: the header names column 'label' "
                   "twice");
    expect_refused("image,,label\na.png,1,2\n", "line 1: column 2 of the header has no name");
    char *nul = malloc(16);
    memcpy(nul, "image\n\0a.png\n", 13);
    cv_table t;
    cv_err err;
    cr_assert_neq(cv_table_parse("t.csv", nul, 12, &t, &err), CV_OK);
    cr_assert(strstr(err.msg, "t.csv: holds a NUL byte"), "%s", err.msg);
}

/* cv_table_images: the table written to dir, its images made (empty files: only their
 * existence is checked later), the request applied. */
static cv_status images_of(const char *name, const char *text, const char *columns,
                           cv_names *names, cv_image_list *list, cv_image_list *test,
                           cv_table_request *req, cv_err *err) {
    char *path = test_path_in(dir, name);
    test_write_file(path, text, strlen(text));
    *req = (cv_table_request){.condition_columns = columns, .names = names};
    err->msg[0] = '\0';
    return cv_table_images(path, req, list, test, err);
}

Test(table, the_condition_a_table_gives) {
    cv_names names = {0};
    cv_image_list l;
    cv_table_request req;
    cv_err err;
    /* label names: sorted, they are the classes */
    cr_assert_eq(images_of("a.csv", "image,label,size\nx.png,dog,3\ny.png,cat,4\nz.png,dog,5\n",
                           NULL, &names, &l, NULL, &req, &err), CV_OK, "%s", err.msg);
    cr_assert(req.kind == CV_COND_LABELS && !req.numeric_labels && names.count == 2);
    cr_assert_str_eq(names.names[0], "cat");
    cr_assert(l.n == 3 && l.labels[0] == 1 && l.labels[1] == 0 && l.labels[2] == 1);
    cr_assert_str_eq(l.paths[1], test_path_in(dir, "y.png"));
    cr_assert(l.line[2] == 4);
    cv_image_list_free(&l);
    cv_names_free(&names);
    /* --condition-columns: vectors, in its order, even beside a label column */
    cr_assert_eq(images_of("b.csv", "image,label,a,b\nx.png,dog,0.5,-2\ny.png,cat,1e-3,7\n",
                           "b,a", &names, &l, NULL, &req, &err), CV_OK, "%s", err.msg);
    cr_assert(req.kind == CV_COND_VECTORS && l.width == 2 && names.count == 2);
    cr_assert_str_eq(names.names[0], "b");
    cr_assert(l.conditions[0] == -2.0f && l.conditions[1] == 0.5f && l.conditions[3] == 1e-3f);
    cv_image_list_free(&l);
    cv_names_free(&names);
    /* no label column: every column whose first row is a number */
    cr_assert_eq(images_of("c.csv", "note image s t\nhi /abs/x.png 1 2\nho y.png 3 4\n", NULL,
                           &names, &l, NULL, &req, &err), CV_OK, "%s", err.msg);
    cr_assert(req.kind == CV_COND_VECTORS && l.width == 2 && l.conditions[3] == 4.0f);
    cr_assert_str_eq(l.paths[0], "/abs/x.png");
    cv_image_list_free(&l);
    cv_names_free(&names);
    /* class numbers */
    cr_assert_eq(images_of("d.csv", "image,label\nx.png,7\ny.png,0\n", NULL, &names, &l, NULL,
                           &req, &err), CV_OK, "%s", err.msg);
    cr_assert(req.kind == CV_COND_LABELS && req.numeric_labels && names.count == 0);
    cr_assert(l.labels[0] == 7 && l.labels[1] == 0);
    cv_image_list_free(&l);
}

/* Refused, with names (or none: a fresh set each time) to keep to. */
static void expect_images_refused(const char *text, const char *columns, cv_names *names,
                                  const char *needle) {
    cv_image_list l;
    cv_table_request req;
    cv_err err;
    cv_names fresh = {0};
    cr_assert_neq(images_of("e.csv", text, columns, names ? names : &fresh, &l, NULL, &req, &err),
                  CV_OK, "accepted: %s", text);
    cv_names_free(&fresh);
    cr_assert(strstr(err.msg, "e.csv"), "the line does not name the table: %s", err.msg);
    cr_assert(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
}

Test(table, bad_values_name_the_line_and_column) {
    expect_images_refused("image,a,b\nx.png,1,2\ny.png,3,x\n", NULL, NULL,
                          "line 3, column 'b': 'x' is not a finite number");
    expect_images_refused("image,a,b\nx.png,1,2\ny.png,,1\n", "a,b", NULL,
                          "line 3, column 'a': no value");
    expect_images_refused("image,a\nx.png,nan\n", "a", NULL, "'nan' is not a finite number");
    expect_images_refused("image,a\nx.png,1\n", "a,zz", NULL, "no column 'zz' to condition on");
    expect_images_refused("file,a\nx.png,1\n", NULL, NULL, "no column 'image'");
    expect_images_refused("image,label\n,cat\n", NULL, NULL, "line 2, column 'image': no value");
    expect_images_refused("image,label\nx.png,a/b\n", NULL, NULL, "line 2, column 'label': "
                          "'a/b' cannot be a class name: it holds a '/'");
    expect_images_refused("image,note\nx.png,hello\n", NULL, NULL, "no column of numbers");
    char *known[] = {"cat", "dog"};
    cv_names classes = {2, known};
    expect_images_refused("image,label\nx.png,cat\ny.png,emu\n", NULL, &classes,
                          "line 3, column 'label': 'emu' is not among the classes");
}

/* CelebA's partition file picks each split's rows: 0 training, 2 test, 1 neither. */
Test(table, celeba_partition_splits_the_rows) {
    const char *parts = "000001.jpg 0\r\n000002.jpg 2\r\n000003.jpg 1\r\n000004.jpg 0\r\n";
    test_write_file(test_path_in(dir, "list_eval_partition.txt"), parts, strlen(parts));
    cv_names names = {0};
    cv_image_list train, test;
    cv_table_request req;
    cv_err err;
    cr_assert_eq(images_of("list_attr_celeba.txt",
                           "4\nSmiling Male\n000001.jpg 1 -1\n000002.jpg -1 -1\n"
                           "000003.jpg 1 1\n000004.jpg -1 1\n",
                           "Male", &names, &train, &test, &req, &err), CV_OK, "%s", err.msg);
    cr_assert(train.n == 2 && test.n == 1, "split %d / %d", train.n, test.n);
    cr_assert(strstr(train.paths[1], "000004.jpg") && train.conditions[1] == 1.0f);
    cr_assert(strstr(test.paths[0], "000002.jpg") && test.conditions[0] == -1.0f);
    cr_assert(train.line[1] == 6 && test.line[0] == 4);
    cv_image_list_free(&train);
    cv_image_list_free(&test);
    cv_names_free(&names);
    /* a row the partition file does not list */
    test_write_file(test_path_in(dir, "list_eval_partition.txt"), parts, 26);
    cr_assert_neq(images_of("list_attr_celeba.txt", "2\nA\n000001.jpg 1\n000009.jpg 1\n", NULL,
                            &names, &train, &test, &req, &err), CV_OK);
    cr_assert(strstr(err.msg, "line 4: 000009.jpg is not in"), "%s", err.msg);
    cv_names_free(&names);
}
