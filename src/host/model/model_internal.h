/* model_internal.h: the pieces of model.c that model_iwae.c builds its passes from
 * (private to model/). Shapes and the gradient rule are model.h's. */
#ifndef CV_MODEL_INTERNAL_H
#define CV_MODEL_INTERNAL_H

#include "cvae/model.h"

/* y = act(x W^T + b + c T) for layers [first, last), the first reading `in`. */
void cv_model_layers_forward(cv_model *m, cv_workspace *ws, int rows, int first, int last,
                             const float *in);
/* Backward through layers [first, last) given dact[last-1]; dx of layer `first` goes to
 * dx_first (NULL: not needed). */
void cv_model_layers_backward(cv_model *m, cv_workspace *ws, int rows, int first, int last,
                              const float *in_first, float *dx_first);
/* The batch's prior as the operations read it (NULL: standard normal), without computing
 * the rows of condition vectors (cv_model_batch_prior does). */
const cv_prior *cv_model_prior_of(const cv_model *m, const cv_workspace *ws, cv_prior *p);
/* Where the prior's gradients go (NULL: no learned prior). */
cv_prior_grad *cv_model_prior_grad_target(cv_model *m, cv_workspace *ws, cv_prior_grad *g);
/* dM += C^T dm and dR += C^T dr for condition vectors' per-row prior gradients. */
void cv_model_prior_tables_backward(cv_model *m, cv_workspace *ws, int rows);
/* rec of the logits of the last layer against ws->x, and with loss_rows > 0 the logit
 * gradient (and a learned sigma's per-row gradients) scaled by 1 / loss_rows. */
void cv_model_reconstruction(cv_model *m, cv_workspace *ws, int rows, int loss_rows);
/* A learned sigma's gradient: ws->dsigma's rows summed into its gradient. */
void cv_model_sigma_backward(cv_model *m, cv_workspace *ws, int rows);

#endif
