/* report_page.c: the report page as HTML (report.h), and a run's data taken back from it.
 *
 * The page needs nothing but itself: the style is inline, the charts are SVG in the page,
 * pictures are data: URIs, there is no script to run, and the favicon is an empty data:
 * URI so that no browser asks for one. A run's own page ends with two data blocks that
 * browsers do not run (script elements of JSON types): its metrics lines verbatim, and
 * the command, for cv_report_read.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "util/fileio.h"

#define METRICS_BLOCK "<script type=\"application/x-ndjson\" id=\"cvae-metrics\">\n"
#define RUN_BLOCK "<script type=\"application/json\" id=\"cvae-run\">{\"command\": \""
#define MAX_PAGE_BYTES (512u << 20) /* far above any page cvae writes */

static const char style[] =
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;"
    "color:#222;padding:0 16px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;"
    "margin:28px 0 8px;border-bottom:1px solid #ddd}.note{color:#666;margin:0}"
    ".charts{display:flex;flex-wrap:wrap;gap:8px}.chart{margin:0}"
    ".chart svg{background:#fff;border:1px solid #e4e4e4}.axis{stroke:#444}"
    ".grid{stroke:#eee}.tick{font-size:11px;fill:#555}.label{font-size:12px;fill:#333}"
    ".title{font-size:13px;font-weight:600;fill:#222}.empty{font-size:12px;fill:#999}"
    ".line{fill:none;stroke-width:1.6}figure{margin:0 0 16px}figcaption{color:#555}"
    ".pictures{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}"
    ".pictures figure{max-width:100%}.pictures figcaption{max-width:420px}"
    ".pictures img{image-rendering:pixelated;max-width:100%;border:1px solid #e4e4e4}"
    "table{border-collapse:collapse}td,th{text-align:left;vertical-align:top;"
    "padding:3px 12px 3px 0}th{font-weight:600;white-space:nowrap}"
    "code{white-space:pre-wrap;word-break:break-all}"
    ".swatch{display:inline-block;width:12px;height:12px;border-radius:2px;"
    "margin-right:6px;vertical-align:-1px}";

static const char *const swatches[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                       "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

/* RFC 4648 base64, for the pictures' data URIs: a few lines here rather than a new
 * dependency (OpenSSL's EVP_EncodeBlock) for them. */
static void base64(FILE *fp, const uint8_t *b, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                           (i + 2 < n ? b[i + 2] : 0);
        fputc(abc[v >> 18 & 63], fp);
        fputc(abc[v >> 12 & 63], fp);
        fputc(i + 1 < n ? abc[v >> 6 & 63] : '=', fp);
        fputc(i + 2 < n ? abc[v & 63] : '=', fp);
    }
}

/* s as the body of a JSON string inside a script element: '<' escaped too, so that no
 * "</script>" can end the block. */
static void script_json(FILE *fp, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(fp, "\\%c", *p);
        else if (*p < 0x20 || *p == '<') fprintf(fp, "\\u%04x", *p);
        else fputc(*p, fp);
    }
}

/* The last value of key in a run's metrics lines, printed into buf ("" when none). */
static void last_value(const char *metrics, const char *key, char *buf, size_t size) {
    buf[0] = '\0';
    for (const char *line = metrics; line && *line;) {
        const char *next = strchr(line, '\n');
        char copy[1024];
        size_t len = next ? (size_t)(next - line) : strlen(line);
        snprintf(copy, sizeof copy, "%.*s", (int)(len < sizeof copy ? len : sizeof copy - 1), line);
        double v;
        if (cv_report_metric(copy, key, &v)) snprintf(buf, size, "%.4f", v);
        line = next ? next + 1 : NULL;
    }
}

/* The runs of a comparison page: colour, label, epochs, last figures, command. */
static void runs_table(FILE *fp, const cv_report_page *pg) {
    fputs("<table class=\"runs\"><tr><th>run</th><th>epochs</th><th>train loss</th>"
          "<th>test -ELBO</th><th>command</th></tr>\n", fp);
    for (int r = 0; r < pg->n_runs; r++) {
        const cv_report_run *run = &pg->runs[r];
        char epochs[32], loss[32], elbo[32];
        last_value(run->metrics, "epoch", epochs, sizeof epochs);
        last_value(run->metrics, "train_loss", loss, sizeof loss);
        last_value(run->metrics, "test_neg_elbo", elbo, sizeof elbo);
        if (epochs[0]) snprintf(epochs, sizeof epochs, "%d", atoi(epochs));
        fprintf(fp, "<tr><td><span class=\"swatch\" style=\"background:%s\"></span>",
                swatches[r % (int)(sizeof swatches / sizeof swatches[0])]);
        cv_report_text(fp, run->label);
        fprintf(fp, "</td><td>%s</td><td>%s</td><td>%s</td><td><code>", epochs, loss,
                elbo[0] ? elbo : "none");
        cv_report_text(fp, run->command ? run->command : "unknown");
        fputs("</code></td></tr>\n", fp);
    }
    fputs("</table>\n", fp);
}

static void pictures(FILE *fp, const cv_report_page *pg) {
    fputs("<h2>Pictures</h2>\n<div class=\"pictures\">\n", fp);
    for (int i = 0; i < pg->n_pictures; i++) {
        const cv_report_picture *p = &pg->pictures[i];
        fputs("<figure><img alt=\"", fp);
        cv_report_text(fp, p->caption);
        fprintf(fp, "\" width=\"%d\" src=\"data:image/png;base64,", p->width);
        base64(fp, p->png, p->bytes);
        fputs("\"><figcaption>", fp);
        cv_report_text(fp, p->caption);
        fputs("</figcaption></figure>\n", fp);
    }
    fputs("</div>\n", fp);
}

static void items(FILE *fp, const cv_report_page *pg) {
    fputs("<h2>Run</h2>\n<table class=\"run\">\n", fp);
    for (int i = 0; i < pg->n_items; i++) {
        fputs("<tr><th>", fp);
        cv_report_text(fp, pg->items[i].key);
        fputs("</th><td><code>", fp);
        cv_report_text(fp, pg->items[i].value);
        fputs("</code></td></tr>\n", fp);
    }
    fputs("</table>\n", fp);
}

/* The one run's data, for cv_report_read. */
static void data_blocks(FILE *fp, const cv_report_run *run) {
    fputs(METRICS_BLOCK, fp);
    fputs(run->metrics, fp);
    fputs("</script>\n" RUN_BLOCK, fp);
    script_json(fp, run->command ? run->command : "");
    fputs("\"}</script>\n", fp);
}

static cv_status page(FILE *fp, const cv_report_page *pg, cv_err *err) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width\">"
          "<link rel=\"icon\" href=\"data:,\"><title>", fp);
    cv_report_text(fp, pg->title);
    fprintf(fp, "</title><style>%s</style></head>\n<body>\n<h1>", style);
    cv_report_text(fp, pg->title);
    fputs("</h1>\n", fp);
    if (pg->note) {
        fputs("<p class=\"note\">", fp);
        cv_report_text(fp, pg->note);
        fputs("</p>\n", fp);
    }
    if (pg->n_runs > 1) runs_table(fp, pg);
    fputs("<h2>Curves</h2>\n", fp);
    cv_status st = cv_report_charts(fp, pg->runs, pg->n_runs, err);
    if (st) return st;
    if (pg->n_pictures) pictures(fp, pg);
    if (pg->n_items) items(fp, pg);
    if (pg->n_runs == 1) data_blocks(fp, &pg->runs[0]);
    fputs("</body></html>\n", fp);
    return CV_OK;
}

cv_status cv_report_write(const char *path, const cv_report_page *pg, cv_err *err) {
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (st) return st;
    st = page(f.fp, pg, err);
    if (!st && ferror(f.fp)) st = cv_fail(err, CV_ERR_IO, "%s: write failed", path);
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}

/* Code point u (below 0x10000) as UTF-8 at *o. */
static void put_utf8(char **o, unsigned u) {
    char *p = *o;
    if (u < 0x80) {
        *p++ = (char)u;
    } else if (u < 0x800) {
        *p++ = (char)(0xC0 | u >> 6);
        *p++ = (char)(0x80 | (u & 63));
    } else {
        *p++ = (char)(0xE0 | u >> 12);
        *p++ = (char)(0x80 | (u >> 6 & 63));
        *p++ = (char)(0x80 | (u & 63));
    }
    *o = p;
}

/* The body of the JSON string at s (its opening quote passed), up to the closing quote,
 * unescaped into a malloc'd string; NULL when malformed. Escapes of 0x80 and above
 * become UTF-8. */
static char *json_string_at(const char *s) {
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    if (!out) return NULL;
    for (; *s && *s != '"'; s++) {
        if (*s != '\\') {
            *o++ = *s;
            continue;
        }
        s++;
        unsigned u;
        if (*s == 'u' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2]) &&
            isxdigit((unsigned char)s[3]) && isxdigit((unsigned char)s[4]) &&
            sscanf(s + 1, "%4x", &u) == 1) {
            put_utf8(&o, u);
            s += 4;
        } else if (*s && strchr("\"\\/", *s)) {
            *o++ = *s;
        } else if (*s == 'n' || *s == 't') {
            *o++ = *s == 'n' ? '\n' : '\t';
        } else {
            free(out);
            return NULL;
        }
    }
    if (*s != '"') {
        free(out);
        return NULL;
    }
    *o = '\0';
    return out;
}

cv_status cv_report_read(const char *path, char **metrics, char **command, cv_err *err) {
    *metrics = *command = NULL;
    int fd;
    uint64_t size;
    cv_status st = cv_open_regular(path, "a report page", &fd, &size, err);
    if (st) return st;
    FILE *fp = fdopen(fd, "rb");
    char *text = size < MAX_PAGE_BYTES ? malloc(size + 1) : NULL;
    bool read_all = fp && text && fread(text, 1, size, fp) == size;
    if (fp) fclose(fp);
    if (!read_all) {
        free(text);
        return cv_fail(err, size >= MAX_PAGE_BYTES ? CV_ERR_FORMAT : CV_ERR_IO,
                       "%s: cannot read the report page", path);
    }
    text[size] = '\0';
    const char *start = strstr(text, METRICS_BLOCK);
    const char *end = start ? strstr(start, "</script>") : NULL;
    const char *run = end ? strstr(end, RUN_BLOCK) : NULL;
    if (!run) {
        free(text);
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a run's report page of cvae (no metrics "
                       "block)", path);
    }
    start += strlen(METRICS_BLOCK);
    *metrics = strndup(start, (size_t)(end - start));
    *command = json_string_at(run + strlen(RUN_BLOCK));
    free(text);
    if (!*metrics) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    return CV_OK;
}
