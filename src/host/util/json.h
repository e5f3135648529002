/* json.h: strings written into JSON text (manifests, export metadata, report data). */
#ifndef CVAE_JSON_H
#define CVAE_JSON_H

#include <stdio.h>

/* s as the body of a JSON string (no quotes): quotes, backslashes and control characters
 * escaped; other bytes, UTF-8 included, as they are. */
void cv_json_escape(FILE *fp, const char *s);

#endif
