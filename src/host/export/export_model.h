/* export_model.h: what the safetensors and ONNX writers share (internal): the exported
 * tensors, under PyTorch's names and in its layout (cvae/export.h), and the model's
 * configuration as JSON. */
#ifndef CVAE_EXPORT_MODEL_H
#define CVAE_EXPORT_MODEL_H

#include <stdint.h>

#include "cvae/export.h"

typedef struct {
    char name[32];
    int64_t rows, cols; /* a matrix (rows, cols), or a vector of rows values: cols 0 */
} export_tensor;

/* The tensors a model of this layout exports: two per layer (weight, bias) in layer order,
 * then the learned prior's two maps. */
int export_tensor_count(const cv_layout *layout);
void export_tensor_info(const cv_layout *layout, int k, export_tensor *t);
static inline int64_t export_tensor_size(const export_tensor *t) {
    return t->rows * (t->cols ? t->cols : 1);
}

/* Tensor k's values from a checkpoint's parameters, into out (export_tensor_size floats):
 * a first layer's weight is [W | T^T], row by row; the prior's tables are transposed. */
void export_tensor_values(const cv_layout *layout, const float *params, int k, float *out);

/* The configuration (docs/design.md 4.6) as one line of JSON, malloc'd; NULL when out of
 * memory. */
char *export_config_json(const cv_export_source *src);

#endif
