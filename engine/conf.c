/* conf: parsing and validation of zipage.conf and --set overrides (see conf.h). */
#include "engine/conf.h"

#include "arena/err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_INT, K_FLOAT, K_BOOL, K_STR, K_ENUM } key_type;

typedef struct key_def {
    const char *section, *name, *doc, *choices, *def_str;
    key_type type;
    double lo, hi, def_num;
    size_t off;
} key_def;

static const key_def keys[] = {
#define CONF_INT(sec, nm, def, l, h, d)                                                            \
    {#sec, #nm, d, NULL, NULL, K_INT, l, h, def, offsetof(conf, nm)},
#define CONF_FLOAT(sec, nm, def, l, h, d)                                                          \
    {#sec, #nm, d, NULL, NULL, K_FLOAT, l, h, def, offsetof(conf, nm)},
#define CONF_BOOL(sec, nm, def, d) {#sec, #nm, d, NULL, NULL, K_BOOL, 0, 1, def, offsetof(conf, nm)},
#define CONF_STR(sec, nm, def, d) {#sec, #nm, d, NULL, def, K_STR, 0, 0, 0, offsetof(conf, nm)},
#define CONF_ENUM(sec, nm, def, ch, d) {#sec, #nm, d, ch, def, K_ENUM, 0, 0, 0, offsetof(conf, nm)},
#include "engine/conf_keys.h"
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* Finds the index of value v among k's '|'-separated choices, or -1. */
static int enum_index(const key_def *k, const char *v) {
    const char *p = k->choices;
    size_t vl = strlen(v);
    for (int i = 0;; i++) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && !strncmp(p, v, l)) return i;
        if (!bar) return -1;
        p = bar + 1;
    }
}

const char *conf_enum_name(const char *key, int value) {
    static _Thread_local char buf[64];
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type != K_ENUM || strcmp(keys[i].name, key)) continue;
        const char *p = keys[i].choices;
        for (int j = 0; j < value && p; j++) p = strchr(p, '|'), p = p ? p + 1 : NULL;
        if (!p) return "?";
        size_t l = strcspn(p, "|");
        snprintf(buf, sizeof buf, "%.*s", (int)l, p);
        return buf;
    }
    return "?";
}

static int octal_key(const key_def *k) {
    size_t l = strlen(k->name);
    return l > 5 && !strcmp(k->name + l - 5, "_mode");
}

/* Stores value text v into c for key k. where = "file:line" or "--set". */
static int set_value(conf *c, const key_def *k, const char *v, const char *where) {
    char *field = (char *)c + k->off;
    char *end;
    switch (k->type) {
    case K_INT: {
        errno = 0;
        long long x = strtoll(v, &end, octal_key(k) ? 8 : 10);
        if (!*v || *end || errno)
            return err_set(ZP_EINVAL, "%s: key '%s': '%s' is not an integer", where, k->name, v);
        if (x < k->lo || x > k->hi)
            return err_set(ZP_EINVAL, "%s: key '%s': value %lld out of range [%.0f, %.0f]", where,
                           k->name, x, k->lo, k->hi);
        *(int64_t *)field = x;
        return 0;
    }
    case K_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x))
            return err_set(ZP_EINVAL, "%s: key '%s': '%s' is not a number", where, k->name, v);
        if (x < k->lo || x > k->hi)
            return err_set(ZP_EINVAL, "%s: key '%s': value %g out of range [%g, %g]", where,
                           k->name, x, k->lo, k->hi);
        *(double *)field = x;
        return 0;
    }
    case K_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1") || !strcmp(v, "yes"))
            *(bool *)field = true;
        else if (!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0") || !strcmp(v, "no"))
            *(bool *)field = false;
        else
            return err_set(ZP_EINVAL, "%s: key '%s': '%s' is not a boolean (true/false/on/off)",
                           where, k->name, v);
        return 0;
    case K_STR:
        if (strlen(v) >= CONF_STR_MAX)
            return err_set(ZP_EINVAL, "%s: key '%s': value longer than %d bytes", where, k->name,
                           CONF_STR_MAX - 1);
        strcpy(field, v);
        return 0;
    case K_ENUM: {
        int i = enum_index(k, v);
        if (i < 0)
            return err_set(ZP_EINVAL, "%s: key '%s': '%s' is not one of %s", where, k->name, v,
                           k->choices);
        *(int *)field = i;
        return 0;
    }
    }
    return ZP_EINVAL;
}

void conf_defaults(conf *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        char *field = (char *)c + k->off;
        switch (k->type) {
        case K_INT: *(int64_t *)field = (int64_t)k->def_num; break;
        case K_FLOAT: *(double *)field = k->def_num; break;
        case K_BOOL: *(bool *)field = k->def_num != 0; break;
        case K_STR: strcpy(field, k->def_str); break;
        case K_ENUM: *(int *)field = enum_index(k, k->def_str); break;
        }
    }
}

static const key_def *find_key(const char *name, size_t len) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strlen(keys[i].name) == len && !strncmp(keys[i].name, name, len)) return &keys[i];
    return NULL;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Applies "key = value" text (key may be "section.key"); section is the enclosing [section]. */
static int apply(conf *c, char *line, const char *section, const char *where) {
    char *eq = strchr(line, '=');
    if (!eq) return err_set(ZP_EINVAL, "%s: expected 'key = value', got '%s'", where, line);
    *eq = 0;
    char *key = trim(line), *val = trim(eq + 1);
    size_t vl = strlen(val);
    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') val[vl - 1] = 0, val++;
    const char *dot = strchr(key, '.');
    char sec[64] = "";
    if (dot) {
        snprintf(sec, sizeof sec, "%.*s", (int)(dot - key), key);
        key = (char *)dot + 1;
        section = sec;
    }
    const key_def *k = find_key(key, strlen(key));
    if (!k) return err_set(ZP_EINVAL, "%s: key '%s': unknown key", where, key);
    if (section && *section && strcmp(section, k->section))
        return err_set(ZP_EINVAL, "%s: key '%s': belongs in section [%s], not [%s]", where, key,
                       k->section, section);
    return set_value(c, k, val, where);
}

int conf_load_file(conf *c, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return err_set(ZP_EINVAL, "%s: cannot open: %s", path, strerror(errno));
    char line[2048], section[64] = "", where[600];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            rc = err_set(ZP_EINVAL, "%s: line longer than %zu bytes", where, sizeof line - 2);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        if (*s == '[') {
            size_t n = strlen(s);
            if (s[n - 1] != ']' || n - 2 >= sizeof section) {
                rc = err_set(ZP_EINVAL, "%s: bad section header '%s'", where, s);
                break;
            }
            snprintf(section, sizeof section, "%.*s", (int)(n - 2), s + 1);
            int known = 0;
            for (size_t i = 0; i < NKEYS; i++) known |= !strcmp(keys[i].section, section);
            if (!known) {
                rc = err_set(ZP_EINVAL, "%s: unknown section [%s]", where, section);
                break;
            }
            continue;
        }
        if ((rc = apply(c, s, section, where))) break;
    }
    fclose(f);
    return rc;
}

int conf_set(conf *c, const char *assignment, const char *src) {
    char buf[CONF_STR_MAX + 128];
    if (strlen(assignment) >= sizeof buf)
        return err_set(ZP_EINVAL, "%s: assignment too long", src);
    strcpy(buf, assignment);
    return apply(c, buf, NULL, src);
}

int conf_from_args(conf *c, int *argc, char **argv) {
    int n = *argc, out = 1;
    /* -c first, so that --set overrides the file wherever it stands. */
    for (int i = 1; i < n; i++) {
        if (strcmp(argv[i], "-c") && strcmp(argv[i], "--config")) continue;
        if (i + 1 >= n) return err_set(ZP_EINVAL, "%s needs a file name", argv[i]);
        int rc = conf_load_file(c, argv[i + 1]);
        if (rc) return rc;
    }
    for (int i = 1; i < n; i++) {
        const char *a = argv[i];
        int rc = 0;
        char buf[CONF_STR_MAX + 32];
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strcmp(a, "--set") || !strcmp(a, "--model") || !strcmp(a, "--backend")) {
            if (i + 1 >= n) return err_set(ZP_EINVAL, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--set")) rc = conf_set(c, v, "--set");
            else {
                snprintf(buf, sizeof buf, "%s=%s", a + 2, v);
                rc = conf_set(c, buf, a);
            }
            if (rc) return rc;
            continue;
        }
        argv[out++] = argv[i];
    }
    argv[out] = NULL;
    *argc = out;
    return 0;
}

void conf_write(FILE *f, const conf *c) {
    fprintf(f, "# zipage.conf: every key with its default, range and meaning.\n"
               "# Syntax: key = value; '#' starts a comment; [section] headers are optional but\n"
               "# must match the key's section. Any key can be overridden with --set key=value.\n");
    const char *sec = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const char *field = (const char *)c + k->off;
        if (strcmp(sec, k->section)) fprintf(f, "\n[%s]\n", sec = k->section);
        char range[96] = "";
        switch (k->type) {
        case K_INT:
            if (octal_key(k))
                snprintf(range, sizeof range, "0%o..0%o", (unsigned)k->lo, (unsigned)k->hi);
            else
                snprintf(range, sizeof range, "%.0f..%.0f", k->lo, k->hi);
            break;
        case K_FLOAT: snprintf(range, sizeof range, "%g..%g", k->lo, k->hi); break;
        case K_BOOL: snprintf(range, sizeof range, "true|false"); break;
        case K_STR: snprintf(range, sizeof range, "text"); break;
        case K_ENUM: snprintf(range, sizeof range, "%s", k->choices); break;
        }
        fprintf(f, "# %s [%s]\n%s = ", k->doc, range, k->name);
        switch (k->type) {
        case K_INT:
            fprintf(f, octal_key(k) ? "0%llo\n" : "%lld\n", (long long)*(const int64_t *)field);
            break;
        case K_FLOAT: fprintf(f, "%g\n", *(const double *)field); break;
        case K_BOOL: fprintf(f, "%s\n", *(const bool *)field ? "true" : "false"); break;
        case K_STR: fprintf(f, "\"%s\"\n", field); break;
        case K_ENUM: fprintf(f, "%s\n", conf_enum_name(k->name, *(const int *)field)); break;
        }
    }
}
