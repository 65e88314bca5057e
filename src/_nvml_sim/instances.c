/* GPU- and compute-instance profiles, placements, occupancy rules and lifecycle. */
#include "sim.h"

/* ------------------------------------------------------------------ GI profiles */

/* Profile info works with MIG off, as on the driver; an index past the table is
 * INVALID_ARGUMENT. */
static enum sim_rc gip_by_index(sim_device_t device, unsigned int index, struct sim_gip **gip)
{
    struct sim_gpu *gpu = gpu_of(device);
    if (gpu == NULL || index >= GIP_INDEX_COUNT)
        return RC_INVALID_ARGUMENT;
    if (!gpu->mig_capable || (*gip = find_gip_by_index(gpu, index)) == NULL)
        return RC_NOT_SUPPORTED;
    return RC_SUCCESS;
}

/* An unknown profile ID: `unknown_rc` (profile info by ID answers INVALID_ARGUMENT, observed
 * on 580.159.04; the placements call keeps NOT_SUPPORTED, which no capture contradicts). */
static enum sim_rc gip_by_id(sim_device_t device, unsigned int id, struct sim_gip **gip,
                             enum sim_rc unknown_rc)
{
    struct sim_gpu *gpu;
    enum sim_rc rc = mig_gpu(device, &gpu);
    if (rc == RC_SUCCESS && (*gip = find_gip_by_id(gpu, id)) == NULL)
        rc = unknown_rc;
    return rc;
}

/* The fields every version of nvmlGpuInstanceProfileInfo has, at version-specific offsets. */
#define FILL_GIP_FIELDS(info, gip)                                                             \
    do {                                                                                       \
        (info)->id = (gip)->id;                                                                \
        (info)->slices = (gip)->slices;                                                        \
        (info)->instances = (gip)->instances;                                                  \
        (info)->sm = (gip)->sm;                                                                \
        (info)->ce = (gip)->ce;                                                                \
        (info)->dec = (gip)->dec;                                                              \
        (info)->enc = (gip)->enc;                                                              \
        (info)->jpeg = (gip)->jpeg;                                                            \
        (info)->ofa = (gip)->ofa;                                                              \
        (info)->memory_mib = (gip)->memory;                                                    \
    } while (0)

static void fill_gip_v1(const struct sim_gip *gip, struct sim_gip_info_v1 *info)
{
    FILL_GIP_FIELDS(info, gip);
    info->p2p = gip->p2p;
}

/* v2 or v3, as the caller's version word says; anything else is INVALID_ARGUMENT. The
 * driver hands the struct back with the version word cleared (observed on 580.159.04). */
static enum sim_rc fill_gip_versioned(const struct sim_gip *gip, void *out)
{
    unsigned int version;
    memcpy(&version, out, sizeof version);
    if (version == GIP_INFO_V2) {
        struct sim_gip_info_v2 *info = out;
        memset(info, 0, sizeof *info);
        FILL_GIP_FIELDS(info, gip);
        info->p2p = gip->p2p;
        copy_string(info->name, sizeof info->name, gip->name);
        return RC_SUCCESS;
    }
    if (version == GIP_INFO_V3) {
        struct sim_gip_info_v3 *info = out;
        memset(info, 0, sizeof *info);
        FILL_GIP_FIELDS(info, gip);
        copy_string(info->name, sizeof info->name, gip->name);
        info->caps = gip->caps;
        return RC_SUCCESS;
    }
    return RC_INVALID_ARGUMENT;
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceProfileInfo(sim_device_t device,
                                                           unsigned int profile,
                                                           struct sim_gip_info_v1 *info)
{
    struct sim_gip *gip;
    ENTER_ON(nvmlDeviceGetGpuInstanceProfileInfo, device);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_index(device, profile, &gip);
    if (rc == RC_SUCCESS)
        fill_gip_v1(gip, info);
    rc = read_end(rc);
    latency_charge_profile_info(FN_nvmlDeviceGetGpuInstanceProfileInfo, device, rc);
    return rc;
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceProfileInfoV(sim_device_t device,
                                                            unsigned int profile, void *info)
{
    struct sim_gip *gip;
    ENTER_ON(nvmlDeviceGetGpuInstanceProfileInfoV, device);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_index(device, profile, &gip);
    if (rc == RC_SUCCESS)
        rc = fill_gip_versioned(gip, info);
    rc = read_end(rc);
    latency_charge_profile_info(FN_nvmlDeviceGetGpuInstanceProfileInfoV, device, rc);
    return rc;
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceProfileInfoByIdV(sim_device_t device,
                                                                unsigned int profile_id,
                                                                void *info)
{
    struct sim_gip *gip;
    ENTER_ON(nvmlDeviceGetGpuInstanceProfileInfoByIdV, device);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_id(device, profile_id, &gip, RC_INVALID_ARGUMENT);
    if (rc == RC_SUCCESS)
        rc = fill_gip_versioned(gip, info);
    rc = read_end(rc);
    latency_charge_profile_info(FN_nvmlDeviceGetGpuInstanceProfileInfoByIdV, device, rc);
    return rc;
}

/*
 * Every placement of the profile, whatever MIG mode and occupancy. NULL array: the count
 * only. An array smaller than *count needs: INSUFFICIENT_SIZE with *count = the number needed
 * (undocumented by nvml.h; the code NVML uses for every short out-array).
 */
static enum sim_rc copy_placements(const struct sim_span *spans, uint32_t n,
                                   struct sim_placement *out, unsigned int *count)
{
    if (out == NULL) {
        *count = n;
        return RC_SUCCESS;
    }
    if (*count < n) {
        *count = n;
        return RC_INSUFFICIENT_SIZE;
    }
    for (uint32_t i = 0; i < n; i++) {
        out[i].start = spans[i].start;
        out[i].size = spans[i].size;
    }
    *count = n;
    return RC_SUCCESS;
}

static enum sim_rc gi_placements(sim_device_t device, unsigned int profile_id,
                                 struct sim_placement *placements, unsigned int *count)
{
    struct sim_gip *gip;
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_id(device, profile_id, &gip, RC_NOT_SUPPORTED);
    if (rc == RC_SUCCESS)
        rc = copy_placements(gip->placements, gip->nplacements, placements, count);
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstancePossiblePlacements(
    sim_device_t device, unsigned int profile_id, struct sim_placement *placements,
    unsigned int *count)
{
    ENTER_ON(nvmlDeviceGetGpuInstancePossiblePlacements, device);
    return gi_placements(device, profile_id, placements, count);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    sim_device_t device, unsigned int profile_id, struct sim_placement *placements,
    unsigned int *count)
{
    ENTER_ON(nvmlDeviceGetGpuInstancePossiblePlacements_v2, device);
    return gi_placements(device, profile_id, placements, count);
}

/* ------------------------------------------------------------------ GI occupancy rules */

static int memory_is_free(const struct sim_gpu *gpu, uint32_t start, uint32_t size)
{
    for (uint32_t id = 0; id < MAX_GIS; id++) {
        const struct sim_gi *gi = &gpu->gis[id];
        if (gi->live && spans_overlap(gi->start, gi->size, start, size))
            return 0;
    }
    return 1;
}

/* While an ALL_ME GI exists only NO_ME profiles fit; an ALL_ME GI needs all others NO_ME. */
static int all_me_conflict(const struct sim_gpu *gpu, const struct sim_gip *gip)
{
    for (uint32_t id = 0; id < MAX_GIS; id++) {
        if (!gpu->gis[id].live)
            continue;
        const struct sim_gip *other = &gpu->gips[gpu->gis[id].gip];
        if ((gip_is_all_me(other) && !gip_is_no_me(gip)) ||
            (gip_is_all_me(gip) && !gip_is_no_me(other)))
            return 1;
    }
    return 0;
}

static uint32_t gis_of_profile(const struct sim_gpu *gpu, const struct sim_gip *gip)
{
    uint32_t n = 0;
    for (uint32_t id = 0; id < MAX_GIS; id++)
        if (gpu->gis[id].live && gpu->gis[id].profile == gip->id)
            n++;
    return n;
}

/* Free placements, capped by instanceCount minus existing GIs, 0 on an ALL_ME clash. */
static uint32_t gi_remaining(const struct sim_gpu *gpu, const struct sim_gip *gip)
{
    uint32_t existing = gis_of_profile(gpu, gip), free = 0;
    if (all_me_conflict(gpu, gip) || existing >= gip->instances)
        return 0;
    for (uint32_t i = 0; i < gip->nplacements; i++)
        if (memory_is_free(gpu, gip->placements[i].start, gip->placements[i].size))
            free++;
    return free < gip->instances - existing ? free : gip->instances - existing;
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceRemainingCapacity(sim_device_t device,
                                                                 unsigned int profile_id,
                                                                 unsigned int *count)
{
    struct sim_gpu *gpu;
    ENTER_ON(nvmlDeviceGetGpuInstanceRemainingCapacity, device);
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    /* With MIG disabled the driver answers too: no GI exists, so the full instance count
     * (observed on 580.159.04). */
    rc = mig_gpu(device, &gpu);
    if (rc == RC_SUCCESS) {
        const struct sim_gip *gip = find_gip_by_id(gpu, profile_id);
        if (gip == NULL)
            rc = RC_INVALID_ARGUMENT;
        else
            *count = gi_remaining(gpu, gip);
    }
    return read_end(rc);
}

/* ------------------------------------------------------------------ GI lifecycle */

/*
 * GI ids by heap numbering of the placement (format doc): id = total/size - 1 + start/size,
 * which gives 0 for 7g, 1-2 for 4g/3g, 3-6 for 2g, 7-14 for 1g on 8-slice parts. Placements
 * that do not fit that scheme take the lowest free id.
 */
static uint32_t gi_id_for(const struct sim_gpu *gpu, uint32_t start, uint32_t size)
{
    uint32_t total = gpu->mslices;
    if (size != 0 && total % size == 0 && start % size == 0) {
        uint32_t id = total / size - 1 + start / size;
        if (id < MAX_GIS && !gpu->gis[id].live)
            return id;
    }
    for (uint32_t id = 0; id < MAX_GIS; id++)
        if (!gpu->gis[id].live)
            return id;
    return MAX_GIS;
}

static enum sim_rc create_gi(struct sim_gpu *gpu, const struct sim_gip *gip,
                             const struct sim_placement *want, sim_gpu_instance_t *out)
{
    uint32_t start = UINT32_MAX;
    if (want != NULL) {
        uint32_t i = 0;
        while (i < gip->nplacements && !(gip->placements[i].start == want->start &&
                                         gip->placements[i].size == want->size))
            i++;
        if (i == gip->nplacements)
            return RC_INVALID_ARGUMENT; /* not a possible placement of this profile */
    }
    if (all_me_conflict(gpu, gip) || gis_of_profile(gpu, gip) >= gip->instances)
        return RC_INSUFFICIENT_RESOURCES;
    if (want != NULL) {
        if (!memory_is_free(gpu, want->start, want->size))
            return RC_INSUFFICIENT_RESOURCES;
        start = want->start;
    } else {
        /* The driver's greedy choice: the profile's `order` starts, first free one wins. */
        for (uint32_t i = 0; i < gip->norder && start == UINT32_MAX; i++)
            if (memory_is_free(gpu, gip->order[i], gip->mslices))
                start = gip->order[i];
        if (start == UINT32_MAX)
            return RC_INSUFFICIENT_RESOURCES;
    }
    uint32_t id = gi_id_for(gpu, start, gip->mslices);
    if (id >= MAX_GIS)
        return RC_INSUFFICIENT_RESOURCES;
    struct sim_gi *gi = &gpu->gis[id];
    memset(gi, 0, sizeof *gi);
    gi->live = 1;
    gi->profile = gip->id;
    gi->gip = (uint32_t)(gip - gpu->gips);
    gi->start = start;
    gi->size = gip->mslices;
    bind_gi(gpu->index, id, gi);
    *out = gi_handle(gi);
    return RC_SUCCESS;
}

static enum sim_rc create_gi_call(sim_device_t device, unsigned int profile_id,
                                  const struct sim_placement *placement,
                                  sim_gpu_instance_t *gpu_instance)
{
    struct sim_gpu *gpu;
    enum sim_rc rc = write_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_enabled_gpu(device, &gpu);
    if (rc == RC_SUCCESS) {
        const struct sim_gip *gip = find_gip_by_id(gpu, profile_id);
        rc = gip == NULL ? RC_INVALID_ARGUMENT : create_gi(gpu, gip, placement, gpu_instance);
    }
    return write_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceCreateGpuInstance(sim_device_t device, unsigned int profile_id,
                                                   sim_gpu_instance_t *gpu_instance)
{
    ENTER_MUTATING(nvmlDeviceCreateGpuInstance, device);
    if (gpu_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_gi_call(device, profile_id, NULL, gpu_instance);
}

SIM_EXPORT enum sim_rc nvmlDeviceCreateGpuInstanceWithPlacement(
    sim_device_t device, unsigned int profile_id, const struct sim_placement *placement,
    sim_gpu_instance_t *gpu_instance)
{
    ENTER_MUTATING(nvmlDeviceCreateGpuInstanceWithPlacement, device);
    if (placement == NULL || gpu_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_gi_call(device, profile_id, placement, gpu_instance);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceDestroy(sim_gpu_instance_t gpu_instance)
{
    struct sim_gpu *gpu;
    uint32_t id;
    ENTER_MUTATING(nvmlGpuInstanceDestroy, gpu_instance);
    enum sim_rc rc = write_begin();
    if (rc != RC_SUCCESS)
        return rc;
    struct sim_gi *gi = gi_of(gpu_instance, &gpu, &id);
    if (gi == NULL) {
        rc = RC_INVALID_ARGUMENT;
    } else if (gpu->mode == 0) {
        rc = RC_NOT_SUPPORTED;
    } else {
        int has_cis = 0;
        for (uint32_t c = 0; c < MAX_CIS; c++)
            has_cis |= gi->cis[c].live;
        if (has_cis || gi->busy != 0)
            rc = RC_IN_USE; /* compute instances or a process still on it */
        else
            release_gi(gi);
    }
    return write_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstances(sim_device_t device, unsigned int profile_id,
                                                 sim_gpu_instance_t *gpu_instances,
                                                 unsigned int *count)
{
    struct sim_gpu *gpu;
    ENTER_ON(nvmlDeviceGetGpuInstances, device);
    /* NULL array: INVALID_ARGUMENT, no count query */
    if (gpu_instances == NULL || count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    /* With MIG disabled: SUCCESS and no instance (observed on 580.159.04). */
    rc = mig_gpu(device, &gpu);
    if (rc == RC_SUCCESS) {
        const struct sim_gip *gip = find_gip_by_id(gpu, profile_id);
        if (gip == NULL) {
            rc = RC_INVALID_ARGUMENT;
        } else {
            /* The caller sized the array by instanceCount; never write past that. */
            unsigned int n = 0;
            for (uint32_t id = 0; id < MAX_GIS && n < gip->instances; id++)
                if (gpu->gis[id].live && gpu->gis[id].profile == profile_id)
                    gpu_instances[n++] = gi_handle(&gpu->gis[id]);
            *count = n;
        }
    }
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceById(sim_device_t device, unsigned int id,
                                                    sim_gpu_instance_t *gpu_instance)
{
    struct sim_gpu *gpu;
    ENTER_ON(nvmlDeviceGetGpuInstanceById, device);
    if (gpu_instance == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_enabled_gpu(device, &gpu);
    if (rc == RC_SUCCESS) {
        if (id >= MAX_GIS || !gpu->gis[id].live)
            rc = RC_NOT_FOUND;
        else
            *gpu_instance = gi_handle(&gpu->gis[id]);
    }
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceGetInfo(sim_gpu_instance_t gpu_instance,
                                              struct sim_gi_info *info)
{
    struct sim_gpu *gpu;
    uint32_t id;
    ENTER_ON(nvmlGpuInstanceGetInfo, gpu_instance);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    struct sim_gi *gi = gi_of(gpu_instance, &gpu, &id);
    if (gi == NULL)
        return read_end(RC_INVALID_ARGUMENT);
    info->device = gpu_handle(gpu);
    info->id = id;
    info->profile_id = gi->profile;
    info->placement.start = gi->start;
    info->placement.size = gi->size;
    return read_end(RC_SUCCESS);
}

/* ------------------------------------------------------------------ CI profiles */

static enum sim_rc cip_by_index(sim_gpu_instance_t gpu_instance, unsigned int index,
                                unsigned int engine_profile, struct sim_cip **cip)
{
    struct sim_gpu *gpu;
    uint32_t id;
    struct sim_gi *gi = gi_of(gpu_instance, &gpu, &id);
    if (gi == NULL || index >= CIP_INDEX_COUNT || engine_profile >= ENGINE_PROFILE_COUNT)
        return RC_INVALID_ARGUMENT;
    *cip = find_cip_by_index(&gpu->gips[gi->gip], index);
    return *cip == NULL ? RC_NOT_SUPPORTED : RC_SUCCESS;
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceGetComputeInstanceProfileInfo(
    sim_gpu_instance_t gpu_instance, unsigned int profile, unsigned int engine_profile,
    struct sim_cip_info_v1 *info)
{
    struct sim_cip *cip;
    ENTER_ON(nvmlGpuInstanceGetComputeInstanceProfileInfo, gpu_instance);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = cip_by_index(gpu_instance, profile, engine_profile, &cip);
    if (rc == RC_SUCCESS) {
        info->id = cip->id;
        info->slices = cip->slices;
        info->instances = cip->instances;
        info->sm = cip->sm;
        info->ce = cip->ce;
        info->dec = cip->dec;
        info->enc = cip->enc;
        info->jpeg = cip->jpeg;
        info->ofa = cip->ofa;
    }
    return read_end(rc);
}

/* v2 (136 bytes) or v3 (140 bytes, with capabilities), as the version word says. */
SIM_EXPORT enum sim_rc nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    sim_gpu_instance_t gpu_instance, unsigned int profile, unsigned int engine_profile,
    void *info)
{
    struct sim_cip *cip;
    unsigned int version;
    ENTER_ON(nvmlGpuInstanceGetComputeInstanceProfileInfoV, gpu_instance);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    memcpy(&version, info, sizeof version);
    if (version != CIP_INFO_V2 && version != CIP_INFO_V3)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = cip_by_index(gpu_instance, profile, engine_profile, &cip);
    if (rc == RC_SUCCESS) {
        struct sim_cip_info_v3 v;
        memset(&v, 0, sizeof v);
        v.version = version;
        v.id = cip->id;
        v.slices = cip->slices;
        v.instances = cip->instances;
        v.sm = cip->sm;
        v.ce = cip->ce;
        v.dec = cip->dec;
        v.enc = cip->enc;
        v.jpeg = cip->jpeg;
        v.ofa = cip->ofa;
        copy_string(v.name, sizeof v.name, cip->name);
        v.caps = cip->caps;
        memcpy(info, &v, version == CIP_INFO_V3 ? sizeof(struct sim_cip_info_v3)
                                                : sizeof(struct sim_cip_info_v2));
    }
    return read_end(rc);
}

/* ------------------------------------------------------------------ CI occupancy rules */

struct gi_ref {
    struct sim_gpu *gpu;
    struct sim_gi *gi;
    struct sim_gip *gip;
    uint32_t id;
};

static int gi_ref_of(sim_gpu_instance_t gpu_instance, struct gi_ref *ref)
{
    ref->gi = gi_of(gpu_instance, &ref->gpu, &ref->id);
    if (ref->gi == NULL)
        return -1;
    ref->gip = &ref->gpu->gips[ref->gi->gip];
    return 0;
}

static int compute_is_free(const struct sim_gi *gi, uint32_t start, uint32_t size)
{
    for (uint32_t c = 0; c < MAX_CIS; c++)
        if (gi->cis[c].live && spans_overlap(gi->cis[c].start, gi->cis[c].size, start, size))
            return 0;
    return 1;
}

static uint32_t cis_of_profile(const struct sim_gi *gi, uint32_t profile_id)
{
    uint32_t n = 0;
    for (uint32_t c = 0; c < MAX_CIS; c++)
        if (gi->cis[c].live && gi->cis[c].profile == profile_id)
            n++;
    return n;
}

static uint32_t ci_remaining(const struct sim_gi *gi, const struct sim_cip *cip)
{
    uint32_t existing = cis_of_profile(gi, cip->id), free = 0;
    if (existing >= cip->instances)
        return 0;
    for (uint32_t i = 0; i < cip->nplacements; i++)
        if (compute_is_free(gi, cip->placements[i].start, cip->placements[i].size))
            free++;
    return free < cip->instances - existing ? free : cip->instances - existing;
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
    sim_gpu_instance_t gpu_instance, unsigned int profile_id, unsigned int *count)
{
    struct gi_ref ref;
    ENTER_ON(nvmlGpuInstanceGetComputeInstanceRemainingCapacity, gpu_instance);
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (gi_ref_of(gpu_instance, &ref) != 0)
        return read_end(RC_INVALID_ARGUMENT);
    const struct sim_cip *cip = find_cip_by_id(ref.gip, profile_id);
    if (cip == NULL)
        return read_end(RC_INVALID_ARGUMENT);
    *count = ci_remaining(ref.gi, cip);
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceGetComputeInstancePossiblePlacements(
    sim_gpu_instance_t gpu_instance, unsigned int profile_id, struct sim_placement *placements,
    unsigned int *count)
{
    struct gi_ref ref;
    ENTER_ON(nvmlGpuInstanceGetComputeInstancePossiblePlacements, gpu_instance);
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (gi_ref_of(gpu_instance, &ref) != 0)
        return read_end(RC_INVALID_ARGUMENT);
    const struct sim_cip *cip = find_cip_by_id(ref.gip, profile_id);
    if (cip == NULL)
        return read_end(RC_NOT_SUPPORTED);
    return read_end(copy_placements(cip->placements, cip->nplacements, placements, count));
}

/* ------------------------------------------------------------------ CI lifecycle */

static enum sim_rc create_ci(struct gi_ref *ref, const struct sim_cip *cip,
                             const struct sim_placement *want, sim_compute_instance_t *out)
{
    uint32_t start = UINT32_MAX, size = 0;
    if (want != NULL) {
        uint32_t i = 0;
        while (i < cip->nplacements && !(cip->placements[i].start == want->start &&
                                         cip->placements[i].size == want->size))
            i++;
        if (i == cip->nplacements)
            return RC_INVALID_ARGUMENT;
    }
    if (cis_of_profile(ref->gi, cip->id) >= cip->instances)
        return RC_INSUFFICIENT_RESOURCES;
    if (want != NULL) {
        if (!compute_is_free(ref->gi, want->start, want->size))
            return RC_INSUFFICIENT_RESOURCES;
        start = want->start;
        size = want->size;
    } else {
        for (uint32_t i = 0; i < cip->nplacements && start == UINT32_MAX; i++) {
            if (compute_is_free(ref->gi, cip->placements[i].start, cip->placements[i].size)) {
                start = cip->placements[i].start;
                size = cip->placements[i].size;
            }
        }
        if (start == UINT32_MAX)
            return RC_INSUFFICIENT_RESOURCES;
    }
    uint32_t id = 0; /* CI ids: the lowest free one, as the driver gives */
    while (id < MAX_CIS && ref->gi->cis[id].live)
        id++;
    if (id == MAX_CIS)
        return RC_INSUFFICIENT_RESOURCES;
    struct sim_ci *ci = &ref->gi->cis[id];
    memset(ci, 0, sizeof *ci);
    ci->live = 1;
    ci->profile = cip->id;
    ci->cip = (uint32_t)(cip - ref->gip->cips);
    ci->start = start;
    ci->size = size;
    bind_ci(ref->gpu, ref->id, id, ci);
    *out = ci_handle(ci);
    return RC_SUCCESS;
}

static enum sim_rc create_ci_call(sim_gpu_instance_t gpu_instance, unsigned int profile_id,
                                  const struct sim_placement *placement,
                                  sim_compute_instance_t *compute_instance)
{
    struct gi_ref ref;
    enum sim_rc rc = write_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (gi_ref_of(gpu_instance, &ref) != 0) {
        rc = RC_INVALID_ARGUMENT;
    } else {
        const struct sim_cip *cip = find_cip_by_id(ref.gip, profile_id);
        rc = cip == NULL ? RC_INVALID_ARGUMENT
                         : create_ci(&ref, cip, placement, compute_instance);
    }
    return write_end(rc);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceCreateComputeInstance(
    sim_gpu_instance_t gpu_instance, unsigned int profile_id,
    sim_compute_instance_t *compute_instance)
{
    ENTER_MUTATING(nvmlGpuInstanceCreateComputeInstance, gpu_instance);
    if (compute_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_ci_call(gpu_instance, profile_id, NULL, compute_instance);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceCreateComputeInstanceWithPlacement(
    sim_gpu_instance_t gpu_instance, unsigned int profile_id,
    const struct sim_placement *placement, sim_compute_instance_t *compute_instance)
{
    ENTER_MUTATING(nvmlGpuInstanceCreateComputeInstanceWithPlacement, gpu_instance);
    if (placement == NULL || compute_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_ci_call(gpu_instance, profile_id, placement, compute_instance);
}

SIM_EXPORT enum sim_rc nvmlComputeInstanceDestroy(sim_compute_instance_t compute_instance)
{
    struct mig_ref ref;
    ENTER_MUTATING(nvmlComputeInstanceDestroy, compute_instance);
    enum sim_rc rc = write_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (ci_of(compute_instance, &ref) != 0)
        rc = RC_INVALID_ARGUMENT;
    else if (ref.ci->busy != 0)
        rc = RC_IN_USE; /* a process runs on it */
    else
        release_ci(ref.ci);
    return write_end(rc);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceGetComputeInstances(
    sim_gpu_instance_t gpu_instance, unsigned int profile_id,
    sim_compute_instance_t *compute_instances, unsigned int *count)
{
    struct gi_ref ref;
    ENTER_ON(nvmlGpuInstanceGetComputeInstances, gpu_instance);
    /* NULL array: INVALID_ARGUMENT, no count query */
    if (compute_instances == NULL || count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (gi_ref_of(gpu_instance, &ref) != 0)
        return read_end(RC_INVALID_ARGUMENT);
    const struct sim_cip *cip = find_cip_by_id(ref.gip, profile_id);
    if (cip == NULL)
        return read_end(RC_INVALID_ARGUMENT);
    unsigned int n = 0;
    for (uint32_t c = 0; c < MAX_CIS && n < cip->instances; c++)
        if (ref.gi->cis[c].live && ref.gi->cis[c].profile == profile_id)
            compute_instances[n++] = ci_handle(&ref.gi->cis[c]);
    *count = n;
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceGetComputeInstanceById(
    sim_gpu_instance_t gpu_instance, unsigned int id, sim_compute_instance_t *compute_instance)
{
    struct gi_ref ref;
    ENTER_ON(nvmlGpuInstanceGetComputeInstanceById, gpu_instance);
    if (compute_instance == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (gi_ref_of(gpu_instance, &ref) != 0)
        return read_end(RC_INVALID_ARGUMENT);
    if (id >= MAX_CIS || !ref.gi->cis[id].live)
        return read_end(RC_NOT_FOUND);
    *compute_instance = ci_handle(&ref.gi->cis[id]);
    return read_end(RC_SUCCESS);
}

/*
 * `device` holds the MIG device handle of this CI, not the parent GPU: the header calls the
 * field the parent device, but NVIDIA's DRA driver calls GetUUID on it to read the new MIG
 * device's UUID. Which one the driver fills in is not documented; we follow the DRA driver.
 */
static enum sim_rc ci_info(sim_compute_instance_t compute_instance, struct sim_ci_info *info)
{
    struct mig_ref ref;
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (ci_of(compute_instance, &ref) != 0)
        return read_end(RC_INVALID_ARGUMENT);
    info->device = mig_handle(ref.ci);
    info->gpu_instance = gi_handle(ref.gi);
    info->id = ref.ci_id;
    info->profile_id = ref.ci->profile;
    info->placement.start = ref.ci->start;
    info->placement.size = ref.ci->size;
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlComputeInstanceGetInfo(sim_compute_instance_t compute_instance,
                                                  struct sim_ci_info *info)
{
    ENTER_ON(nvmlComputeInstanceGetInfo, compute_instance);
    return ci_info(compute_instance, info);
}

SIM_EXPORT enum sim_rc nvmlComputeInstanceGetInfo_v2(sim_compute_instance_t compute_instance,
                                                     struct sim_ci_info *info)
{
    ENTER_ON(nvmlComputeInstanceGetInfo_v2, compute_instance);
    return ci_info(compute_instance, info);
}

