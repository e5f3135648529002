/* cvae.h: the whole public C API in one include. */
#ifndef CVAE_CVAE_H
#define CVAE_CVAE_H

#include "cvae/backend.h"
#include "cvae/bench.h"
#include "cvae/checkpoint.h"
#include "cvae/comm.h"
#include "cvae/data.h"
#include "cvae/eval.h"
#include "cvae/export.h"
#include "cvae/generate.h"
#include "cvae/latent.h"
#include "cvae/model.h"
#include "cvae/npy.h"
#include "cvae/rng.h"
#include "cvae/score.h"
#include "cvae/status.h"
#include "cvae/train.h"
#include "cvae/version.h"

#endif
