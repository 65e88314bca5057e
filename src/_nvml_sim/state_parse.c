/* Reading a state file's text into a struct sim_state (format: docs/simulator-state-format.md). */
#include "sim.h"

/* ------------------------------------------------------------------ state file parser */

/* Why the record being parsed was refused: the first, most specific reason wins. */
static char g_why[STATE_ERROR_LEN];

__attribute__((format(printf, 1, 2))) static void why(const char *fmt, ...)
{
    if (g_why[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_why, sizeof g_why, fmt, ap);
    va_end(ap);
}

struct sim_field {
    const char *key;
    size_t klen;
    const char *val;
    size_t vlen;
};

struct sim_record {
    const char *kw;
    size_t kwlen;
    uint32_t nfields;
    struct sim_field fields[MAX_FIELDS];
};

/* Split one trimmed, non-empty, non-comment line; `name=` takes the rest of the line. */
static int split_record(const char *p, const char *end, struct sim_record *rec)
{
    rec->kw = p;
    while (p < end && *p != ' ' && *p != '\t')
        p++;
    rec->kwlen = (size_t)(p - rec->kw);
    rec->nfields = 0;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= end)
            return 0;
        if (rec->nfields == MAX_FIELDS) {
            why("more than %d fields", MAX_FIELDS);
            return -1;
        }
        struct sim_field *f = &rec->fields[rec->nfields++];
        const char *tok = p;
        int is_name = (size_t)(end - p) >= 5 && memcmp(p, "name=", 5) == 0;
        if (is_name)
            p = end;
        else
            while (p < end && *p != ' ' && *p != '\t')
                p++;
        const char *eq = memchr(tok, '=', (size_t)(p - tok));
        f->key = tok;
        if (eq == NULL) {
            f->klen = (size_t)(p - tok);
            f->val = p;
            f->vlen = 0;
        } else {
            f->klen = (size_t)(eq - tok);
            f->val = eq + 1;
            f->vlen = (size_t)(p - eq - 1);
        }
    }
}

static int kw_is(const struct sim_record *rec, const char *kw)
{
    return rec->kwlen == strlen(kw) && memcmp(rec->kw, kw, rec->kwlen) == 0;
}

static const struct sim_field *rec_get(const struct sim_record *rec, const char *key)
{
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < rec->nfields; i++)
        if (rec->fields[i].klen == klen && memcmp(rec->fields[i].key, key, klen) == 0)
            return &rec->fields[i];
    return NULL;
}

int parse_u64(const char *s, size_t len, uint64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf || s[0] == '-' || s[0] == '+')
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *endp;
    errno = 0;
    unsigned long long v = strtoull(buf, &endp, 0);
    if (errno != 0 || *endp != '\0')
        return -1;
    *out = v;
    return 0;
}

/* A number field; a missing field keeps *out unless `required`. */
static int get_u64(const struct sim_record *rec, const char *key, uint64_t *out, int required)
{
    const struct sim_field *f = rec_get(rec, key);
    if (f == NULL) {
        if (required)
            why("missing field '%s'", key);
        return required ? -1 : 0;
    }
    if (parse_u64(f->val, f->vlen, out) != 0) {
        why("'%s': not a number, or out of range", key);
        return -1;
    }
    return 0;
}

static int get_u32(const struct sim_record *rec, const char *key, uint32_t *out, int required)
{
    uint64_t v = *out;
    if (get_u64(rec, key, &v, required) != 0)
        return -1;
    if (v > UINT32_MAX) {
        why("'%s': out of range", key);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int get_str(const struct sim_record *rec, const char *key, char *buf, size_t cap)
{
    const struct sim_field *f = rec_get(rec, key);
    if (f == NULL)
        return 0;
    if (f->vlen >= cap) {
        why("'%s': longer than %zu characters", key, cap - 1);
        return -1;
    }
    memcpy(buf, f->val, f->vlen);
    buf[f->vlen] = '\0';
    return 0;
}

/*
 * A comma list or "-" (none), at most MAX_PLACEMENTS items, each number at most 64: spans
 * "0:1,1:1" into `spans`, or plain numbers "6,4,5" into `values` (the other one NULL).
 */
static int get_items(const struct sim_record *rec, const char *key, struct sim_span *spans,
                     uint32_t *values, uint32_t *n)
{
    const struct sim_field *f = rec_get(rec, key);
    *n = 0;
    if (f == NULL || (f->vlen == 1 && f->val[0] == '-'))
        return 0;
    const char *p = f->val, *end = f->val + f->vlen;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        const char *colon = spans ? memchr(p, ':', (size_t)(item_end - p)) : item_end;
        uint64_t first, size = 1;
        if (*n == MAX_PLACEMENTS || colon == NULL ||
            parse_u64(p, (size_t)(colon - p), &first) != 0 ||
            (spans && parse_u64(colon + 1, (size_t)(item_end - colon - 1), &size) != 0) ||
            size == 0 || first > 64 || size > 64) {
            why("'%s': not a list of %s (at most %d)", key, spans ? "START:SIZE" : "numbers",
                MAX_PLACEMENTS);
            return -1;
        }
        if (spans) {
            spans[*n].start = (uint32_t)first;
            spans[*n].size = (uint32_t)size;
        } else {
            values[*n] = (uint32_t)first;
        }
        (*n)++;
        p = comma ? comma + 1 : end;
    }
    return 0;
}

int add_call_totals(struct sim_state *st, const char *name, size_t len, uint64_t count,
                    uint64_t charged_ns)
{
    if (len == 0 || len >= CALL_NAME_LEN)
        return -1;
    for (uint32_t i = 0; i < st->ncalls; i++) {
        if (strlen(st->calls[i].name) == len && memcmp(st->calls[i].name, name, len) == 0) {
            st->calls[i].count += count;
            st->calls[i].charged_ns += charged_ns;
            return 0;
        }
    }
    if (st->ncalls == MAX_CALL_NAMES)
        return -1;
    struct sim_call *c = &st->calls[st->ncalls++];
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    c->count = count;
    c->charged_ns = charged_ns;
    return 0;
}

static int parse_gpu_record(const struct sim_record *rec, struct sim_state *st)
{
    uint32_t index = 0;
    if (get_u32(rec, "index", &index, 1) != 0)
        return -1;
    if (index != st->ngpus || st->ngpus == MAX_GPUS) {
        why("gpu index %u out of order (expected %u, at most %d GPUs)", index, st->ngpus,
            MAX_GPUS);
        return -1;
    }
    struct sim_gpu *gpu = &st->gpus[st->ngpus];
    memset(gpu, 0, sizeof *gpu);
    gpu->index = index;
    gpu->arch = 0xffffffffU;
    if (get_str(rec, "uuid", gpu->uuid, sizeof gpu->uuid) != 0 ||
        get_str(rec, "bus", gpu->bus, sizeof gpu->bus) != 0 ||
        get_str(rec, "name", gpu->name, sizeof gpu->name) != 0 ||
        get_u32(rec, "pci", &gpu->pci, 0) != 0 || get_u32(rec, "subsys", &gpu->subsys, 0) != 0 ||
        get_u64(rec, "memory", &gpu->memory, 0) != 0 || get_u32(rec, "arch", &gpu->arch, 0) != 0 ||
        get_u32(rec, "mig_capable", &gpu->mig_capable, 0) != 0 ||
        get_u32(rec, "mode", &gpu->mode, 0) != 0 ||
        get_u32(rec, "pending", &gpu->pending, 0) != 0 ||
        get_u32(rec, "max_mig", &gpu->max_mig, 0) != 0 ||
        get_u32(rec, "minor", &gpu->minor, 0) != 0)
        return -1;
    if (gpu->mode > 1 || gpu->pending > 1 || gpu->uuid[0] == '\0') {
        why("gpu: 'mode' and 'pending' must be 0 or 1, and 'uuid' set");
        return -1;
    }
    unsigned int domain, bus, dev, fn;
    if (sscanf(gpu->bus, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) == 4) {
        gpu->pci_domain = domain;
        gpu->pci_bus = bus;
        gpu->pci_dev = dev;
    }
    st->ngpus++;
    return 0;
}

static struct sim_gpu *record_gpu(const struct sim_record *rec, struct sim_state *st)
{
    uint32_t index = 0;
    if (get_u32(rec, "gpu", &index, 1) != 0)
        return NULL;
    if (index >= st->ngpus) {
        why("no GPU %u", index);
        return NULL;
    }
    return &st->gpus[index];
}

static int parse_gip_record(const struct sim_record *rec, struct sim_state *st)
{
    struct sim_gpu *gpu = record_gpu(rec, st);
    if (gpu == NULL)
        return -1;
    if (gpu->ngips == MAX_GIPS) {
        why("more than %d GPU-instance profiles on GPU %u", MAX_GIPS, gpu->index);
        return -1;
    }
    struct sim_gip g;
    memset(&g, 0, sizeof g);
    if (get_u32(rec, "index", &g.index, 1) != 0 || get_u32(rec, "id", &g.id, 1) != 0 ||
        get_u32(rec, "slices", &g.slices, 0) != 0 || get_u32(rec, "mslices", &g.mslices, 0) != 0 ||
        get_u32(rec, "instances", &g.instances, 0) != 0 ||
        get_u64(rec, "memory", &g.memory, 0) != 0 || get_u32(rec, "sm", &g.sm, 0) != 0 ||
        get_u32(rec, "ce", &g.ce, 0) != 0 || get_u32(rec, "dec", &g.dec, 0) != 0 ||
        get_u32(rec, "enc", &g.enc, 0) != 0 || get_u32(rec, "jpeg", &g.jpeg, 0) != 0 ||
        get_u32(rec, "ofa", &g.ofa, 0) != 0 || get_u32(rec, "p2p", &g.p2p, 0) != 0 ||
        get_u32(rec, "caps", &g.caps, 0) != 0 ||
        get_items(rec, "placements", g.placements, NULL, &g.nplacements) != 0 ||
        get_items(rec, "order", NULL, g.order, &g.norder) != 0 ||
        get_str(rec, "name", g.name, sizeof g.name) != 0)
        return -1;
    g.devmem = g.memory;
    if (get_u64(rec, "devmem", &g.devmem, 0) != 0)
        return -1;
    if (g.index >= GIP_INDEX_COUNT) {
        why("GPU-instance profile index 0x%X out of range (0x0 to 0x%X)", g.index,
            GIP_INDEX_COUNT - 1);
        return -1;
    }
    if (find_gip_by_index(gpu, g.index) != NULL || find_gip_by_id(gpu, g.id) != NULL) {
        why("GPU-instance profile index 0x%X or ID %u repeated on GPU %u", g.index, g.id,
            gpu->index);
        return -1;
    }
    for (uint32_t i = 0; i < g.nplacements; i++) {
        if (g.mslices == 0)
            g.mslices = g.placements[i].size;
        if (g.placements[i].size != g.mslices) {
            why("placements of one size only (%u memory slices)", g.mslices);
            return -1;
        }
        uint32_t end = g.placements[i].start + g.placements[i].size;
        if (end > gpu->mslices)
            gpu->mslices = end;
    }
    /* Every start in `order` must be a possible placement; no order = placement order. */
    for (uint32_t i = 0; i < g.norder; i++) {
        uint32_t k = 0;
        while (k < g.nplacements && g.placements[k].start != g.order[i])
            k++;
        if (k == g.nplacements) {
            why("'order' names start %u, which is not a placement", g.order[i]);
            return -1;
        }
    }
    if (g.norder == 0) {
        for (uint32_t i = 0; i < g.nplacements; i++)
            g.order[i] = g.placements[i].start;
        g.norder = g.nplacements;
    }
    gpu->gips[gpu->ngips++] = g;
    return 0;
}

static int parse_cip_record(const struct sim_record *rec, struct sim_state *st)
{
    struct sim_gpu *gpu = record_gpu(rec, st);
    uint32_t gip_id = 0;
    if (gpu == NULL || get_u32(rec, "gip", &gip_id, 1) != 0)
        return -1;
    struct sim_gip *gip = find_gip_by_id(gpu, gip_id);
    if (gip == NULL) {
        why("unknown GPU-instance profile ID %u on GPU %u", gip_id, gpu->index);
        return -1;
    }
    if (gip->ncips == MAX_CIPS) {
        why("more than %d compute-instance profiles", MAX_CIPS);
        return -1;
    }
    struct sim_cip c;
    memset(&c, 0, sizeof c);
    if (get_u32(rec, "index", &c.index, 1) != 0 || get_u32(rec, "id", &c.id, 1) != 0 ||
        get_u32(rec, "slices", &c.slices, 0) != 0 ||
        get_u32(rec, "instances", &c.instances, 0) != 0 || get_u32(rec, "sm", &c.sm, 0) != 0 ||
        get_u32(rec, "ce", &c.ce, 0) != 0 || get_u32(rec, "dec", &c.dec, 0) != 0 ||
        get_u32(rec, "enc", &c.enc, 0) != 0 || get_u32(rec, "jpeg", &c.jpeg, 0) != 0 ||
        get_u32(rec, "ofa", &c.ofa, 0) != 0 || get_u32(rec, "caps", &c.caps, 0) != 0 ||
        get_items(rec, "placements", c.placements, NULL, &c.nplacements) != 0 ||
        get_str(rec, "name", c.name, sizeof c.name) != 0)
        return -1;
    if (c.index >= CIP_INDEX_COUNT || find_cip_by_index(gip, c.index) != NULL ||
        find_cip_by_id(gip, c.id) != NULL) {
        why("compute-instance profile index 0x%X out of range (0x0 to 0x%X) or repeated",
            c.index, CIP_INDEX_COUNT - 1);
        return -1;
    }
    gip->cips[gip->ncips++] = c;
    return 0;
}

static int parse_gi_record(const struct sim_record *rec, struct sim_state *st)
{
    struct sim_gpu *gpu = record_gpu(rec, st);
    uint32_t id = 0, profile = 0, start = 0, size = 0;
    uint64_t busy = 0;
    if (gpu == NULL || get_u32(rec, "id", &id, 1) != 0 ||
        get_u32(rec, "profile", &profile, 1) != 0 || get_u32(rec, "start", &start, 1) != 0 ||
        get_u32(rec, "size", &size, 1) != 0 || get_u64(rec, "busy", &busy, 0) != 0)
        return -1;
    struct sim_gip *gip = find_gip_by_id(gpu, profile);
    if (gip == NULL) {
        why("unknown GPU-instance profile ID %u on GPU %u", profile, gpu->index);
        return -1;
    }
    if (id >= MAX_GIS || gpu->gis[id].live || size == 0) {
        why("GI id %u out of range (0 to %d) or repeated, or size 0", id, MAX_GIS - 1);
        return -1;
    }
    struct sim_gi *gi = &gpu->gis[id];
    memset(gi, 0, sizeof *gi);
    gi->live = 1;
    gi->profile = profile;
    gi->gip = (uint32_t)(gip - gpu->gips);
    gi->start = start;
    gi->size = size;
    gi->busy = busy;
    return 0;
}

static int parse_ci_record(const struct sim_record *rec, struct sim_state *st)
{
    struct sim_gpu *gpu = record_gpu(rec, st);
    uint32_t gi_id = 0, id = 0, profile = 0, start = 0, size = 0;
    uint64_t busy = 0;
    if (gpu == NULL || get_u32(rec, "gi", &gi_id, 1) != 0 || get_u32(rec, "id", &id, 1) != 0 ||
        get_u32(rec, "profile", &profile, 1) != 0 || get_u32(rec, "start", &start, 1) != 0 ||
        get_u32(rec, "size", &size, 1) != 0 || get_u64(rec, "busy", &busy, 0) != 0)
        return -1;
    if (gi_id >= MAX_GIS || !gpu->gis[gi_id].live) {
        why("no GI %u on GPU %u", gi_id, gpu->index);
        return -1;
    }
    if (id >= MAX_CIS || size == 0) {
        why("CI id %u out of range (0 to %d), or size 0", id, MAX_CIS - 1);
        return -1;
    }
    struct sim_gi *gi = &gpu->gis[gi_id];
    struct sim_cip *cip = find_cip_by_id(&gpu->gips[gi->gip], profile);
    if (cip == NULL) {
        why("unknown compute-instance profile ID %u in GI %u", profile, gi_id);
        return -1;
    }
    if (gi->cis[id].live) {
        why("CI id %u repeated in GI %u", id, gi_id);
        return -1;
    }
    struct sim_ci *ci = &gi->cis[id];
    memset(ci, 0, sizeof *ci);
    ci->live = 1;
    ci->profile = profile;
    ci->cip = (uint32_t)(cip - gpu->gips[gi->gip].cips);
    ci->start = start;
    ci->size = size;
    ci->busy = busy;
    return 0;
}

/* `calls NAME=COUNT ...` or `charged NAME=NANOSECONDS ...`. */
static int parse_calls_record(const struct sim_record *rec, struct sim_state *st, int charged)
{
    for (uint32_t i = 0; i < rec->nfields; i++) {
        uint64_t n;
        const struct sim_field *f = &rec->fields[i];
        if (parse_u64(f->val, f->vlen, &n) != 0 ||
            add_call_totals(st, f->key, f->klen, charged ? 0 : n, charged ? n : 0) != 0) {
            why("bad entry '%.*s', or more than %d function names", (int)f->klen, f->key,
                MAX_CALL_NAMES);
            return -1;
        }
    }
    return 0;
}

/* Record the current reason at `line`; a refused last line without its newline is a
 * file cut short, which the reason says too. */
static void state_error_at(struct state_error *err, unsigned int line, int last_without_newline)
{
    err->line = line;
    snprintf(err->reason, sizeof err->reason, "%s%s", g_why,
             last_without_newline ? " (the file ends inside this line: truncated?)" : "");
    sim_debug("state file line %u: %s", line, err->reason);
}

/*
 * Parse a whole state file into st. Three passes, so records may refer to records further
 * down: GPUs, GI profiles and counts first, then CI profiles and GIs, then CIs.
 */
int parse_state(const char *buf, size_t len, struct sim_state *st, struct state_error *err)
{
    static struct sim_record rec; /* large; only used under g_mutex */
    st->ngpus = 0;
    st->ncalls = 0;
    copy_string(st->driver, sizeof st->driver, "0.0");
    copy_string(st->cuda, sizeof st->cuda, "0.0");
    for (int pass = 0; pass < 3; pass++) {
        const char *p = buf, *end = buf + len;
        unsigned int lineno = 0;
        int seen_header = 0;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *line_end = nl ? nl : end;
            const char *s = p, *e = line_end;
            p = nl ? nl + 1 : end;
            lineno++;
            g_why[0] = '\0';
            if (memchr(s, '\0', (size_t)(e - s)) != NULL) {
                why("a NUL byte in the line");
                state_error_at(err, lineno, nl == NULL);
                return -1;
            }
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
                e--;
            if (s == e || *s == '#')
                continue;
            int rc;
            if (split_record(s, e, &rec) != 0) {
                rc = -1;
            } else if (!seen_header) {
                uint32_t version = 0;
                seen_header = 1;
                rc = kw_is(&rec, "migkit-sim") && get_u32(&rec, "version", &version, 1) == 0 &&
                             version == 1
                         ? 0
                         : -1;
                if (rc != 0) {
                    g_why[0] = '\0';
                    why("the first record must be 'migkit-sim version=1'");
                }
            } else if (pass == 0 && kw_is(&rec, "driver")) {
                rc = get_str(&rec, "version", st->driver, sizeof st->driver) |
                     get_str(&rec, "cuda", st->cuda, sizeof st->cuda);
            } else if (pass == 0 && kw_is(&rec, "gpu")) {
                rc = parse_gpu_record(&rec, st);
            } else if (pass == 0 && kw_is(&rec, "gip")) {
                rc = parse_gip_record(&rec, st);
            } else if (pass == 0 && kw_is(&rec, "calls")) {
                rc = parse_calls_record(&rec, st, 0);
            } else if (pass == 0 && kw_is(&rec, "charged")) {
                rc = parse_calls_record(&rec, st, 1);
            } else if (pass == 1 && kw_is(&rec, "cip")) {
                rc = parse_cip_record(&rec, st);
            } else if (pass == 1 && kw_is(&rec, "gi")) {
                rc = parse_gi_record(&rec, st);
            } else if (pass == 2 && kw_is(&rec, "ci")) {
                rc = parse_ci_record(&rec, st);
            } else {
                rc = 0; /* another pass's record, or an unknown one (ignored) */
            }
            if (rc != 0) {
                why("bad record");
                state_error_at(err, lineno, nl == NULL);
                return -1;
            }
        }
        if (!seen_header) {
            why("empty: no 'migkit-sim version=1' record");
            state_error_at(err, 0, 0);
            return -1;
        }
    }
    return 0;
}

