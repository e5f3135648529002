/* image_list.c: the images of a split before decoding (image_set.h), freed. */
#include <stdlib.h>
#include <string.h>

#include "data/image_set.h"

void cv_image_list_free(cv_image_list *l) {
    for (int i = 0; l->paths && i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    free(l->line);
    free(l->labels);
    free(l->conditions);
    memset(l, 0, sizeof *l);
}
