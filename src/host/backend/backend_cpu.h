/* backend_cpu.h: the CPU backend's parts in files of their own (private to backend/). */
#ifndef CV_BACKEND_CPU_H
#define CV_BACKEND_CPU_H

#include "cvae/backend.h"

/* Fills be's training-objective operations (free bits, IWAE, the learned Gaussian sigma,
 * cvae score's heads) and memory_info: backend_cpu_objectives.c. */
void cv_backend_cpu_objectives(cv_backend *be);

#endif
