/* Handle slots, MIG device UUIDs, and resolving handles back to the simulated node. */
#include "sim.h"

/* ------------------------------------------------------------------ slot tables */

static uint64_t g_next_uid = 1;           /* uids of GIs and CIs; 0 marks a free slot */
static uint32_t g_gi_cursor, g_ci_cursor; /* round-robin slot allocation */

static struct sim_device g_gpu_handles[MAX_GPUS];
static struct sim_device g_mig_handles[CI_SLOTS];
static struct sim_gpu_instance g_gi_slots[GI_SLOTS];
static struct sim_compute_instance g_ci_slots[CI_SLOTS];

void init_gpu_handles(void)
{
    for (uint32_t i = 0; i < MAX_GPUS; i++) {
        g_gpu_handles[i].magic = DEVICE_MAGIC;
        g_gpu_handles[i].gpu = i;
    }
}

static long slot_of(const void *p, const void *table, size_t size, size_t count);

/*
 * The GPU a device, MIG device, GI or CI handle belongs to, or -1; no state lock needed (the
 * slots' GPU numbers are stored atomically), so the latency model can serialize per GPU
 * before the call takes the state lock. A stale handle may name its old GPU: harmless there.
 */
int gpu_index_of_handle(const void *handle)
{
    long i;
    if ((i = slot_of(handle, g_gpu_handles, sizeof g_gpu_handles[0], MAX_GPUS)) >= 0)
        return (int)i;
    if ((i = slot_of(handle, g_mig_handles, sizeof g_mig_handles[0], CI_SLOTS)) >= 0)
        return (int)(__atomic_load_n(&g_mig_handles[i].gpu, __ATOMIC_RELAXED) % MAX_GPUS);
    if ((i = slot_of(handle, g_gi_slots, sizeof g_gi_slots[0], GI_SLOTS)) >= 0)
        return (int)(__atomic_load_n(&g_gi_slots[i].gpu, __ATOMIC_RELAXED) % MAX_GPUS);
    if ((i = slot_of(handle, g_ci_slots, sizeof g_ci_slots[0], CI_SLOTS)) >= 0)
        return (int)(__atomic_load_n(&g_ci_slots[i].gpu, __ATOMIC_RELAXED) % MAX_GPUS);
    return -1;
}

/* ------------------------------------------------------------------ MIG UUIDs */

static uint64_t mix64(uint64_t k) /* MurmurHash3's 64-bit finalizer */
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/*
 * A version-5-shaped UUID from (GPU UUID, GI id, CI id): two independently seeded 64-bit
 * FNV-1a lanes over the name, cross-mixed, give 128 well-spread bits; the version nibble is
 * set to 5 and the variant to 10xx. The same triple always gives the same UUID.
 */
static void make_mig_uuid(const char *gpu_uuid, uint32_t gi, uint32_t ci, char out[MIG_UUID_LEN])
{
    char name[UUID_LEN + 48];
    int n = snprintf(name, sizeof name, "migkit-mig/%s/%u/%u", gpu_uuid, gi, ci);
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x6c62272e07bb0142ULL;
    for (int i = 0; i < n && i < (int)sizeof name; i++) {
        a = (a ^ (unsigned char)name[i]) * 0x100000001b3ULL;
        b = (b ^ (unsigned char)name[i]) * 0x100000001b3ULL;
        b = (b << 29) | (b >> 35);
    }
    a = mix64(a ^ (uint64_t)n);
    b = mix64(b + a);
    a = mix64(a + b);
    unsigned char u[16];
    for (int i = 0; i < 8; i++) {
        u[i] = (unsigned char)(a >> (56 - 8 * i));
        u[8 + i] = (unsigned char)(b >> (56 - 8 * i));
    }
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x50);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    snprintf(out, MIG_UUID_LEN,
             "MIG-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
}

/* ------------------------------------------------------------------ handle slots */

void bind_gi(uint32_t gpu, uint32_t id, struct sim_gi *gi)
{
    gi->uid = g_next_uid++;
    for (uint32_t n = 0; n < GI_SLOTS; n++) {
        uint32_t i = (g_gi_cursor + n) % GI_SLOTS;
        if (g_gi_slots[i].uid == 0) {
            g_gi_slots[i].uid = gi->uid;
            __atomic_store_n(&g_gi_slots[i].gpu, gpu, __ATOMIC_RELAXED);
            g_gi_slots[i].id = id;
            gi->slot = i;
            g_gi_cursor = (i + 1) % GI_SLOTS;
            return;
        }
    }
    gi->slot = UINT32_MAX; /* unreachable: there are twice as many slots as live GIs */
}

void bind_ci(const struct sim_gpu *g, uint32_t gi_id, uint32_t id, struct sim_ci *ci)
{
    ci->uid = g_next_uid++;
    make_mig_uuid(g->uuid, gi_id, id, ci->uuid);
    for (uint32_t n = 0; n < CI_SLOTS; n++) {
        uint32_t i = (g_ci_cursor + n) % CI_SLOTS;
        if (g_ci_slots[i].uid == 0) {
            g_ci_slots[i].uid = ci->uid;
            __atomic_store_n(&g_ci_slots[i].gpu, g->index, __ATOMIC_RELAXED);
            g_ci_slots[i].gi = gi_id;
            g_ci_slots[i].id = id;
            g_mig_handles[i].magic = DEVICE_MAGIC;
            __atomic_store_n(&g_mig_handles[i].gpu, g->index, __ATOMIC_RELAXED);
            ci->slot = i;
            g_ci_cursor = (i + 1) % CI_SLOTS;
            return;
        }
    }
    ci->slot = UINT32_MAX;
}

void release_ci(struct sim_ci *ci)
{
    if (ci->slot < CI_SLOTS && g_ci_slots[ci->slot].uid == ci->uid) {
        g_ci_slots[ci->slot].uid = 0;
        g_mig_handles[ci->slot].magic = 0;
    }
    ci->live = 0;
}

void release_gi(struct sim_gi *gi)
{
    for (uint32_t c = 0; c < MAX_CIS; c++)
        if (gi->cis[c].live)
            release_ci(&gi->cis[c]);
    if (gi->slot < GI_SLOTS && g_gi_slots[gi->slot].uid == gi->uid)
        g_gi_slots[gi->slot].uid = 0;
    gi->live = 0;
}

static int same_gi(const struct sim_gi *a, const struct sim_gi *b)
{
    return a->live && b->live && a->profile == b->profile && a->start == b->start &&
           a->size == b->size;
}

static int same_ci(const struct sim_ci *a, const struct sim_ci *b)
{
    return a->live && b->live && a->profile == b->profile && a->start == b->start &&
           a->size == b->size;
}

/*
 * After a reload: an instance that is still there (same GPU UUID, id, profile and placement)
 * keeps its handle; the handles of vanished ones become stale; new ones get fresh slots.
 */
void carry_handles(struct sim_state *old, struct sim_state *next)
{
    for (uint32_t g = 0; g < old->ngpus; g++) {
        struct sim_gpu *og = &old->gpus[g];
        struct sim_gpu *ng = NULL;
        if (g < next->ngpus && strcmp(og->uuid, next->gpus[g].uuid) == 0)
            ng = &next->gpus[g];
        for (uint32_t id = 0; id < MAX_GIS; id++) {
            struct sim_gi *ogi = &og->gis[id];
            if (!ogi->live)
                continue;
            struct sim_gi *ngi = ng ? &ng->gis[id] : NULL;
            if (ngi == NULL || !same_gi(ogi, ngi)) {
                release_gi(ogi);
                continue;
            }
            ngi->uid = ogi->uid;
            ngi->slot = ogi->slot;
            for (uint32_t c = 0; c < MAX_CIS; c++) {
                struct sim_ci *oci = &ogi->cis[c], *nci = &ngi->cis[c];
                if (!oci->live)
                    continue;
                if (!same_ci(oci, nci)) {
                    release_ci(oci);
                    continue;
                }
                nci->uid = oci->uid;
                nci->slot = oci->slot;
                memcpy(nci->uuid, oci->uuid, sizeof nci->uuid);
            }
        }
    }
    for (uint32_t g = 0; g < next->ngpus; g++) {
        struct sim_gpu *ng = &next->gpus[g];
        for (uint32_t id = 0; id < MAX_GIS; id++) {
            struct sim_gi *gi = &ng->gis[id];
            if (!gi->live)
                continue;
            if (gi->uid == 0)
                bind_gi(g, id, gi);
            for (uint32_t c = 0; c < MAX_CIS; c++)
                if (gi->cis[c].live && gi->cis[c].uid == 0)
                    bind_ci(ng, id, c, &gi->cis[c]);
        }
    }
}

/* ------------------------------------------------------------------ resolving handles */

/* Slot number of p in a table of `count` elements of `size` bytes, or -1. */
static long slot_of(const void *p, const void *table, size_t size, size_t count)
{
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)table;
    if (a < base || a >= base + size * count || (a - base) % size != 0)
        return -1;
    return (long)((a - base) / size);
}

struct sim_gpu *gpu_of(const struct sim_device *h)
{
    long i = slot_of(h, g_gpu_handles, sizeof g_gpu_handles[0], MAX_GPUS);
    if (i < 0 || (uint32_t)i >= g_cur->ngpus || h->magic != DEVICE_MAGIC)
        return NULL;
    return &g_cur->gpus[i];
}

static int ci_slot_lookup(long slot, struct mig_ref *ref)
{
    const struct sim_compute_instance *s = &g_ci_slots[slot];
    if (s->uid == 0 || s->gpu >= g_cur->ngpus || s->gi >= MAX_GIS || s->id >= MAX_CIS)
        return -1;
    ref->gpu = &g_cur->gpus[s->gpu];
    ref->gi = &ref->gpu->gis[s->gi];
    ref->ci = &ref->gi->cis[s->id];
    ref->gi_id = s->gi;
    ref->ci_id = s->id;
    return ref->gi->live && ref->ci->live && ref->ci->uid == s->uid ? 0 : -1;
}

static int mig_of(const struct sim_device *h, struct mig_ref *ref)
{
    long i = slot_of(h, g_mig_handles, sizeof g_mig_handles[0], CI_SLOTS);
    if (i < 0 || h->magic != DEVICE_MAGIC)
        return -1;
    return ci_slot_lookup(i, ref);
}

int ci_of(const struct sim_compute_instance *h, struct mig_ref *ref)
{
    long i = slot_of(h, g_ci_slots, sizeof g_ci_slots[0], CI_SLOTS);
    return i < 0 ? -1 : ci_slot_lookup(i, ref);
}

struct sim_gi *gi_of(const struct sim_gpu_instance *h, struct sim_gpu **gpu_out, uint32_t *id_out)
{
    long i = slot_of(h, g_gi_slots, sizeof g_gi_slots[0], GI_SLOTS);
    if (i < 0 || h->uid == 0 || h->gpu >= g_cur->ngpus || h->id >= MAX_GIS)
        return NULL;
    struct sim_gpu *gpu = &g_cur->gpus[h->gpu];
    struct sim_gi *gi = &gpu->gis[h->id];
    if (!gi->live || gi->uid != h->uid)
        return NULL;
    *gpu_out = gpu;
    *id_out = h->id;
    return gi;
}

enum device_kind resolve_device(const struct sim_device *h, struct sim_gpu **gpu,
                                struct mig_ref *mig)
{
    if ((*gpu = gpu_of(h)) != NULL)
        return DEV_GPU;
    if (mig_of(h, mig) == 0) {
        *gpu = mig->gpu;
        return DEV_MIG;
    }
    return DEV_BAD;
}

sim_device_t gpu_handle(const struct sim_gpu *gpu)
{
    return &g_gpu_handles[gpu->index];
}

sim_device_t mig_handle(const struct sim_ci *ci)
{
    return &g_mig_handles[ci->slot];
}


sim_gpu_instance_t gi_handle(const struct sim_gi *gi)
{
    return &g_gi_slots[gi->slot];
}

sim_compute_instance_t ci_handle(const struct sim_ci *ci)
{
    return &g_ci_slots[ci->slot];
}
