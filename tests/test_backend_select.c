/* test_backend_select.c: what --device auto, cpu and cuda choose, with a CUDA constructor
 * that fails the way a present but unusable GPU does, so the policy is tested in every
 * build, with a GPU or without. */
#include <criterion/criterion.h>
#include <string.h>

#include "backend/backend_select.h"

static const char *unusable = "cuBLAS could not start on Fake GPU: the library was not "
                              "initialized";
static int cuda_attempts;

static cv_status unusable_gpu(const cv_backend_options *opt, cv_backend **out, cv_err *err) {
    (void)opt;
    cuda_attempts++;
    *out = NULL;
    return cv_fail(err, CV_ERR_DEVICE, "%s", unusable);
}

Test(backend_select, auto_falls_back_to_the_cpu_and_says_why_in_one_line) {
    cv_backend *be = NULL;
    cv_err err;
    cr_assert_eq(cv_backend_open_with("auto", NULL, unusable_gpu, &be, &err), CV_OK, "%s",
                 err.msg);
    cr_assert_eq(cuda_attempts, 1);
    cr_assert_str_eq(be->name, "cpu");
    cr_assert(strstr(be->description, "auto chose the CPU") && strstr(be->description, unusable),
              "%s", be->description);
    cr_assert(strchr(be->description, '\n') == NULL, "%s", be->description);
    be->destroy(be);
}

Test(backend_select, cuda_is_the_device_error_itself) {
    cv_backend *be = (cv_backend *)&cuda_attempts;
    cv_err err;
    cr_assert_eq(cv_backend_open_with("cuda", NULL, unusable_gpu, &be, &err), CV_ERR_DEVICE);
    cr_assert_null(be);
    cr_assert_str_eq(err.msg, unusable);
}

Test(backend_select, cpu_never_tries_the_gpu_and_refuses_tf32) {
    cv_backend *be = NULL;
    cv_err err;
    cr_assert_eq(cv_backend_open_with("cpu", NULL, unusable_gpu, &be, &err), CV_OK);
    cr_assert_eq(cuda_attempts, 0);
    be->destroy(be);
    cv_backend_options tf32 = {.precision = CV_PRECISION_TF32};
    cr_assert_eq(cv_backend_open_with("cpu", &tf32, unusable_gpu, &be, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "tf32") != NULL, "%s", err.msg);
}

static int chosen_device = -2;

static cv_status record_device(const cv_backend_options *opt, cv_backend **out, cv_err *err) {
    chosen_device = opt->device_chosen ? opt->device : -1;
    *out = NULL;
    return cv_fail(err, CV_ERR_DEVICE, "recorded");
}

Test(backend_select, cuda_n_names_gpu_n_and_cuda_leaves_the_choice_to_the_backend) {
    cv_backend *be;
    cv_err err;
    cv_backend_open_with("cuda:3", NULL, record_device, &be, &err);
    cr_assert_eq(chosen_device, 3);
    cv_backend_open_with("cuda:0", NULL, record_device, &be, &err);
    cr_assert_eq(chosen_device, 0);
    cv_backend_open_with("cuda", NULL, record_device, &be, &err);
    cr_assert_eq(chosen_device, -1, "plain cuda chose device %d", chosen_device);
    const char *bad[] = {"cuda:", "cuda:x", "cuda:-1", "cuda:256", "cuda:1x", "cuda: 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(cv_backend_cuda_index(bad[i]), -1, "'%s'", bad[i]);
        cr_assert_eq(cv_backend_open_with(bad[i], NULL, record_device, &be, &err), CV_ERR_USAGE,
                     "'%s'", bad[i]);
    }
    cr_assert_eq(cv_backend_cuda_index("cuda:255"), 255);
}

Test(backend_select, an_unknown_device_is_a_usage_error) {
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_open_with("tpu", NULL, unusable_gpu, &be, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "'tpu'") != NULL, "%s", err.msg);
    cr_assert_eq(cuda_attempts, 0);
}
