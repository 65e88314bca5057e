/* The device API: system, enumeration, identity, MIG mode, MIG device handles, processes. */
#include "sim.h"

/* ------------------------------------------------------------------ system */

static enum sim_rc put_string(char *buf, unsigned int length, const char *s)
{
    size_t n = strlen(s);
    if (buf == NULL)
        return RC_INVALID_ARGUMENT;
    if ((size_t)length < n + 1)
        return RC_INSUFFICIENT_SIZE;
    memcpy(buf, s, n + 1);
    return RC_SUCCESS;
}

SIM_EXPORT enum sim_rc nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    ENTER(nvmlSystemGetDriverVersion);
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    return read_end(put_string(version, length, g_cur->driver));
}

/* The NVML version is "<CUDA major>.<driver version>", e.g. 13.580.105.08. */
SIM_EXPORT enum sim_rc nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    ENTER(nvmlSystemGetNVMLVersion);
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    char text[128];
    snprintf(text, sizeof text, "%lu.%s", strtoul(g_cur->cuda, NULL, 10), g_cur->driver);
    return read_end(put_string(version, length, text));
}

static enum sim_rc cuda_version(int *out)
{
    if (out == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    char *dot;
    unsigned long major = strtoul(g_cur->cuda, &dot, 10), minor = 0;
    if (*dot == '.')
        minor = strtoul(dot + 1, NULL, 10);
    *out = (int)(major * 1000 + minor * 10); /* 13.0 -> 13000 */
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlSystemGetCudaDriverVersion(int *version)
{
    ENTER(nvmlSystemGetCudaDriverVersion);
    return cuda_version(version);
}

SIM_EXPORT enum sim_rc nvmlSystemGetCudaDriverVersion_v2(int *version)
{
    ENTER(nvmlSystemGetCudaDriverVersion_v2);
    return cuda_version(version);
}

/* ------------------------------------------------------------------ enumeration */

static enum sim_rc device_count(unsigned int *count)
{
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    /* Every walk over the node (migkit's snapshot, pynvml, nvidia-smi) starts here, so this
     * call always looks at the state file: a walk sees changes made by other processes (or
     * by editing the file) just before it, not up to a millisecond later. */
    state_file_refresh_now();
    *count = g_cur->ngpus;
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetCount(unsigned int *count)
{
    ENTER(nvmlDeviceGetCount);
    return device_count(count);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetCount_v2(unsigned int *count)
{
    ENTER(nvmlDeviceGetCount_v2);
    return device_count(count);
}

static enum sim_rc handle_by_index(unsigned int index, sim_device_t *device)
{
    if (device == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (index >= g_cur->ngpus)
        return read_end(RC_INVALID_ARGUMENT);
    *device = gpu_handle(&g_cur->gpus[index]);
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetHandleByIndex(unsigned int index, sim_device_t *device)
{
    ENTER(nvmlDeviceGetHandleByIndex);
    return handle_by_index(index, device);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetHandleByIndex_v2(unsigned int index, sim_device_t *device)
{
    ENTER(nvmlDeviceGetHandleByIndex_v2);
    return handle_by_index(index, device);
}

/* "MIG-GPU-<gpu uuid>/<gi>/<ci>" (the R470 legacy form) -> a MIG device handle. */
static enum sim_rc handle_by_legacy_mig_uuid(const char *uuid, sim_device_t *device)
{
    const char *gpu_part = uuid + 4; /* after "MIG-" */
    const char *slash = strchr(gpu_part, '/');
    if (slash == NULL)
        return RC_NOT_FOUND;
    char *endp;
    unsigned long gi_id = strtoul(slash + 1, &endp, 10);
    if (*endp != '/')
        return RC_NOT_FOUND;
    unsigned long ci_id = strtoul(endp + 1, &endp, 10);
    if (*endp != '\0' || gi_id >= MAX_GIS || ci_id >= MAX_CIS)
        return RC_NOT_FOUND;
    size_t len = (size_t)(slash - gpu_part);
    for (uint32_t g = 0; g < g_cur->ngpus; g++) {
        struct sim_gpu *gpu = &g_cur->gpus[g];
        if (strlen(gpu->uuid) != len || strncasecmp(gpu->uuid, gpu_part, len) != 0)
            continue;
        struct sim_gi *gi = &gpu->gis[gi_id];
        if (!gpu->mode || !gi->live || !gi->cis[ci_id].live)
            return RC_NOT_FOUND;
        *device = mig_handle(&gi->cis[ci_id]);
        return RC_SUCCESS;
    }
    return RC_NOT_FOUND;
}

SIM_EXPORT enum sim_rc nvmlDeviceGetHandleByUUID(const char *uuid, sim_device_t *device)
{
    ENTER(nvmlDeviceGetHandleByUUID);
    if (uuid == NULL || device == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (strncasecmp(uuid, "MIG-GPU-", 8) == 0)
        return read_end(handle_by_legacy_mig_uuid(uuid, device));
    int is_mig = strncasecmp(uuid, "MIG-", 4) == 0;
    for (uint32_t g = 0; g < g_cur->ngpus; g++) {
        struct sim_gpu *gpu = &g_cur->gpus[g];
        if (!is_mig) {
            if (strcasecmp(gpu->uuid, uuid) == 0) {
                *device = gpu_handle(gpu);
                return read_end(RC_SUCCESS);
            }
            continue;
        }
        for (uint32_t id = 0; id < MAX_GIS; id++) {
            struct sim_gi *gi = &gpu->gis[id];
            for (uint32_t c = 0; gi->live && c < MAX_CIS; c++) {
                if (gi->cis[c].live && strcasecmp(gi->cis[c].uuid, uuid) == 0) {
                    *device = mig_handle(&gi->cis[c]);
                    return read_end(RC_SUCCESS);
                }
            }
        }
    }
    return read_end(RC_NOT_FOUND);
}

/* Accepts "dddddddd:bb:dd.f", "dddd:bb:dd.f" and "bb:dd.f" (hex, any case). */
static int parse_bus_id(const char *s, unsigned int *domain, unsigned int *bus, unsigned int *dev)
{
    unsigned int a, b, c, d;
    char tail;
    if (sscanf(s, "%x:%x:%x.%x%c", &a, &b, &c, &d, &tail) == 4) {
        *domain = a;
        *bus = b;
        *dev = c;
        return 0;
    }
    if (sscanf(s, "%x:%x.%x%c", &b, &c, &d, &tail) == 3) {
        *domain = 0;
        *bus = b;
        *dev = c;
        return 0;
    }
    return -1;
}

static enum sim_rc handle_by_bus_id(const char *bus_id, sim_device_t *device)
{
    unsigned int domain, bus, dev;
    if (bus_id == NULL || device == NULL)
        return RC_INVALID_ARGUMENT;
    if (parse_bus_id(bus_id, &domain, &bus, &dev) != 0)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    for (uint32_t g = 0; g < g_cur->ngpus; g++) {
        struct sim_gpu *gpu = &g_cur->gpus[g];
        if (gpu->pci_domain == domain && gpu->pci_bus == bus && gpu->pci_dev == dev) {
            *device = gpu_handle(gpu);
            return read_end(RC_SUCCESS);
        }
    }
    return read_end(RC_NOT_FOUND);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetHandleByPciBusId(const char *bus_id, sim_device_t *device)
{
    ENTER(nvmlDeviceGetHandleByPciBusId);
    return handle_by_bus_id(bus_id, device);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, sim_device_t *device)
{
    ENTER(nvmlDeviceGetHandleByPciBusId_v2);
    return handle_by_bus_id(bus_id, device);
}

/* ------------------------------------------------------------------ identity */

/* MIG device handles report their parent's PCI identity. */
static enum sim_rc pci_info(sim_device_t device, struct sim_pci_info *pci)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    if (pci == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (resolve_device(device, &gpu, &mig) == DEV_BAD)
        return read_end(RC_INVALID_ARGUMENT);
    memset(pci, 0, sizeof *pci);
    snprintf(pci->bus_id_legacy, sizeof pci->bus_id_legacy, "%04X:%02X:%02X.0",
             gpu->pci_domain & 0xffffU, gpu->pci_bus & 0xffU, gpu->pci_dev & 0xffU);
    snprintf(pci->bus_id, sizeof pci->bus_id, "%08X:%02X:%02X.0", gpu->pci_domain,
             gpu->pci_bus & 0xffU, gpu->pci_dev & 0xffU);
    pci->domain = gpu->pci_domain;
    pci->bus = gpu->pci_bus;
    pci->device = gpu->pci_dev;
    pci->pci_device_id = gpu->pci;
    pci->pci_subsystem_id = gpu->subsys;
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetPciInfo(sim_device_t device, struct sim_pci_info *pci)
{
    ENTER_ON(nvmlDeviceGetPciInfo, device);
    return pci_info(device, pci);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetPciInfo_v2(sim_device_t device, struct sim_pci_info *pci)
{
    ENTER_ON(nvmlDeviceGetPciInfo_v2, device);
    return pci_info(device, pci);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetPciInfo_v3(sim_device_t device, struct sim_pci_info *pci)
{
    ENTER_ON(nvmlDeviceGetPciInfo_v3, device);
    return pci_info(device, pci);
}

enum device_number { NUM_MINOR, NUM_INDEX, NUM_GI_ID, NUM_CI_ID };

/* Minor number and index belong to physical GPUs, GI and CI ids to MIG devices; the other
 * kind of handle gets NOT_SUPPORTED. */
static enum sim_rc device_number(sim_device_t device, unsigned int *out,
                                 enum device_number which)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    if (out == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    enum device_kind kind = resolve_device(device, &gpu, &mig);
    if (kind == DEV_BAD)
        return read_end(RC_INVALID_ARGUMENT);
    int of_mig_device = which == NUM_GI_ID || which == NUM_CI_ID;
    if (of_mig_device != (kind == DEV_MIG))
        return read_end(RC_NOT_SUPPORTED);
    switch (which) {
    case NUM_MINOR:
        *out = gpu->minor;
        break;
    case NUM_INDEX:
        *out = gpu->index;
        break;
    case NUM_GI_ID:
        *out = mig.gi_id;
        break;
    case NUM_CI_ID:
        *out = mig.ci_id;
        break;
    }
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetMinorNumber(sim_device_t device, unsigned int *minor)
{
    ENTER_ON(nvmlDeviceGetMinorNumber, device);
    return device_number(device, minor, NUM_MINOR);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetIndex(sim_device_t device, unsigned int *index)
{
    ENTER_ON(nvmlDeviceGetIndex, device);
    return device_number(device, index, NUM_INDEX);
}

/* A MIG device's name: "<parent name> MIG <profile>", the CI profile's for a partial CI. */
static void mig_device_name(const struct mig_ref *mig, char *out, size_t cap)
{
    const struct sim_gip *gip = &mig->gpu->gips[mig->gi->gip];
    const struct sim_cip *cip = &gip->cips[mig->ci->cip];
    const char *profile = cip->slices < gip->slices ? cip->name : gip->name;
    if (strncmp(profile, "MIG ", 4) == 0)
        profile += 4;
    snprintf(out, cap, "%s MIG %s", mig->gpu->name, profile);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetName(sim_device_t device, char *name, unsigned int length)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    char text[2 * NAME_LEN];
    ENTER_ON(nvmlDeviceGetName, device);
    if (name == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_GPU:
        return read_end(put_string(name, length, gpu->name));
    case DEV_MIG:
        mig_device_name(&mig, text, sizeof text);
        return read_end(put_string(name, length, text));
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
}

SIM_EXPORT enum sim_rc nvmlDeviceGetUUID(sim_device_t device, char *uuid, unsigned int length)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    ENTER_ON(nvmlDeviceGetUUID, device);
    if (uuid == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_GPU:
        return read_end(put_string(uuid, length, gpu->uuid));
    case DEV_MIG:
        return read_end(put_string(uuid, length, mig.ci->uuid));
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
}

SIM_EXPORT enum sim_rc nvmlDeviceGetArchitecture(sim_device_t device, unsigned int *arch)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    ENTER_ON(nvmlDeviceGetArchitecture, device);
    if (arch == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    if (resolve_device(device, &gpu, &mig) == DEV_BAD)
        return read_end(RC_INVALID_ARGUMENT);
    *arch = gpu->arch;
    return read_end(RC_SUCCESS);
}

/* Total bytes: the GPU's memory, or for a MIG device its GI profile's `devmem`. */
static enum sim_rc memory_total(sim_device_t device, unsigned long long *total)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_GPU:
        *total = gpu->memory * MIB;
        return RC_SUCCESS;
    case DEV_MIG:
        *total = gpu->gips[mig.gi->gip].devmem * MIB;
        return RC_SUCCESS;
    default:
        return RC_INVALID_ARGUMENT;
    }
}

SIM_EXPORT enum sim_rc nvmlDeviceGetMemoryInfo(sim_device_t device, struct sim_memory_v1 *memory)
{
    unsigned long long total = 0;
    ENTER_ON(nvmlDeviceGetMemoryInfo, device);
    if (memory == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = memory_total(device, &total);
    if (rc == RC_SUCCESS) {
        memory->total = total;
        memory->free = total; /* nothing runs on a simulated GPU */
        memory->used = 0;
    }
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetMemoryInfo_v2(sim_device_t device,
                                                  struct sim_memory_v2 *memory)
{
    unsigned long long total = 0;
    ENTER_ON(nvmlDeviceGetMemoryInfo_v2, device);
    if (memory == NULL || memory->version != MEMORY_V2)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = memory_total(device, &total);
    if (rc == RC_SUCCESS) {
        memory->total = total;
        memory->reserved = 0;
        memory->free = total;
        memory->used = 0;
    }
    return read_end(rc);
}

/* MIG device handles only (a physical GPU answers NOT_SUPPORTED): SMs from the CI profile,
 * the rest from the GI profile. */
static enum sim_rc attributes(sim_device_t device, struct sim_attributes *attr)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    if (attr == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_MIG: {
        const struct sim_gip *gip = &gpu->gips[mig.gi->gip];
        const struct sim_cip *cip = &gip->cips[mig.ci->cip];
        attr->sm = cip->sm;
        attr->ce = gip->ce;
        attr->dec = gip->dec;
        attr->enc = gip->enc;
        attr->jpeg = gip->jpeg;
        attr->ofa = gip->ofa;
        attr->gi_slices = gip->slices;
        attr->ci_slices = cip->slices;
        attr->memory_mib = gip->devmem;
        return read_end(RC_SUCCESS);
    }
    case DEV_GPU:
        return read_end(RC_NOT_SUPPORTED);
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
}

SIM_EXPORT enum sim_rc nvmlDeviceGetAttributes(sim_device_t device, struct sim_attributes *attr)
{
    ENTER_ON(nvmlDeviceGetAttributes, device);
    return attributes(device, attr);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetAttributes_v2(sim_device_t device,
                                                  struct sim_attributes *attr)
{
    ENTER_ON(nvmlDeviceGetAttributes_v2, device);
    return attributes(device, attr);
}

/* ------------------------------------------------------------------ MIG mode */

/* A physical, MIG-capable GPU; MIG device handles are not accepted here. */
enum sim_rc mig_gpu(sim_device_t device, struct sim_gpu **gpu)
{
    *gpu = gpu_of(device);
    if (*gpu == NULL)
        return RC_INVALID_ARGUMENT;
    return (*gpu)->mig_capable ? RC_SUCCESS : RC_NOT_SUPPORTED;
}

/* As mig_gpu, and MIG currently enabled: the driver answers GI-level calls NOT_SUPPORTED
 * otherwise. */
enum sim_rc mig_enabled_gpu(sim_device_t device, struct sim_gpu **gpu)
{
    enum sim_rc rc = mig_gpu(device, gpu);
    if (rc == RC_SUCCESS && (*gpu)->mode == 0)
        rc = RC_NOT_SUPPORTED;
    return rc;
}

static int gpu_has_gis(const struct sim_gpu *gpu)
{
    for (uint32_t id = 0; id < MAX_GIS; id++)
        if (gpu->gis[id].live)
            return 1;
    return 0;
}

/*
 * Ampere (arch < 9) only records the pending mode; the simulated reset
 * (migkit.simulator.reset_gpus) makes it current. Hopper and later switch at once.
 * Disabling while GIs exist is refused with IN_USE, as the driver does.
 */
SIM_EXPORT enum sim_rc nvmlDeviceSetMigMode(sim_device_t device, unsigned int mode,
                                            enum sim_rc *activation_status)
{
    struct sim_gpu *gpu;
    ENTER_MUTATING(nvmlDeviceSetMigMode, device);
    if (activation_status == NULL || mode > 1)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = write_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_gpu(device, &gpu);
    if (rc == RC_SUCCESS) {
        if (mode == 0 && gpu_has_gis(gpu)) {
            rc = RC_IN_USE;
            *activation_status = RC_IN_USE;
        } else {
            gpu->pending = mode;
            if (gpu->arch >= ARCH_HOPPER)
                gpu->mode = mode;
            *activation_status = RC_SUCCESS;
        }
    }
    return write_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetMigMode(sim_device_t device, unsigned int *current,
                                            unsigned int *pending)
{
    struct sim_gpu *gpu;
    ENTER_ON(nvmlDeviceGetMigMode, device);
    if (current == NULL || pending == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_gpu(device, &gpu);
    if (rc == RC_SUCCESS) {
        *current = gpu->mode;
        *pending = gpu->pending;
    }
    return read_end(rc);
}


/* ------------------------------------------------------------------ MIG device handles */

SIM_EXPORT enum sim_rc nvmlDeviceIsMigDeviceHandle(sim_device_t device, unsigned int *is_mig)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    ENTER_ON(nvmlDeviceIsMigDeviceHandle, device);
    if (is_mig == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    enum device_kind kind = resolve_device(device, &gpu, &mig);
    if (kind == DEV_BAD)
        return read_end(RC_INVALID_ARGUMENT);
    *is_mig = kind == DEV_MIG;
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceId(sim_device_t device, unsigned int *id)
{
    ENTER_ON(nvmlDeviceGetGpuInstanceId, device);
    return device_number(device, id, NUM_GI_ID);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeInstanceId(sim_device_t device, unsigned int *id)
{
    ENTER_ON(nvmlDeviceGetComputeInstanceId, device);
    return device_number(device, id, NUM_CI_ID);
}

/* SUCCESS with 0 when MIG is unsupported or off, as the driver answers. */
SIM_EXPORT enum sim_rc nvmlDeviceGetMaxMigDeviceCount(sim_device_t device, unsigned int *count)
{
    ENTER_ON(nvmlDeviceGetMaxMigDeviceCount, device);
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    struct sim_gpu *gpu = gpu_of(device);
    if (gpu == NULL)
        return read_end(RC_INVALID_ARGUMENT);
    *count = gpu->mig_capable && gpu->mode ? gpu->max_mig : 0;
    return read_end(RC_SUCCESS);
}

/* MIG devices in ascending GI id, then CI id, the driver's enumeration order. */
SIM_EXPORT enum sim_rc nvmlDeviceGetMigDeviceHandleByIndex(sim_device_t device,
                                                           unsigned int index,
                                                           sim_device_t *mig_device)
{
    struct sim_gpu *gpu;
    ENTER_ON(nvmlDeviceGetMigDeviceHandleByIndex, device);
    if (mig_device == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_gpu(device, &gpu);
    if (rc != RC_SUCCESS)
        return read_end(rc);
    if (gpu->mode == 0) /* no MIG device while MIG is disabled (observed on 580.159.04) */
        return read_end(RC_NOT_FOUND);
    if (index >= gpu->max_mig)
        return read_end(RC_INVALID_ARGUMENT);
    unsigned int n = 0;
    for (uint32_t id = 0; id < MAX_GIS; id++) {
        const struct sim_gi *gi = &gpu->gis[id];
        for (uint32_t c = 0; gi->live && c < MAX_CIS; c++) {
            if (!gi->cis[c].live)
                continue;
            if (n++ == index) {
                *mig_device = mig_handle(&gi->cis[c]);
                return read_end(RC_SUCCESS);
            }
        }
    }
    return read_end(RC_NOT_FOUND);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetDeviceHandleFromMigDeviceHandle(sim_device_t mig_device,
                                                                    sim_device_t *device)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    ENTER_ON(nvmlDeviceGetDeviceHandleFromMigDeviceHandle, mig_device);
    if (device == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    switch (resolve_device(mig_device, &gpu, &mig)) {
    case DEV_MIG:
        *device = gpu_handle(gpu);
        return read_end(RC_SUCCESS);
    case DEV_GPU:
        return read_end(RC_NOT_SUPPORTED);
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
}

/* ------------------------------------------------------------------ running processes */

#define NO_INSTANCE 0xFFFFFFFFu /* computeInstanceId of a process on a GI without CIs */

/* One simulated process per busy (GI, CI): the CI's own `busy` PID, else its GI's. */
struct proc_list {
    unsigned int n;
    unsigned int pid[MAX_GIS * MAX_CIS + MAX_GIS];
    unsigned int gi[MAX_GIS * MAX_CIS + MAX_GIS];
    unsigned int ci[MAX_GIS * MAX_CIS + MAX_GIS];
};

static void add_proc(struct proc_list *l, uint64_t pid, uint32_t gi, uint32_t ci)
{
    l->pid[l->n] = (unsigned int)pid;
    l->gi[l->n] = gi;
    l->ci[l->n] = ci;
    l->n++;
}

static void gi_procs(const struct sim_gi *gi, uint32_t gi_id, struct proc_list *l)
{
    int has_cis = 0;
    for (uint32_t c = 0; c < MAX_CIS; c++) {
        const struct sim_ci *ci = &gi->cis[c];
        if (!ci->live)
            continue;
        has_cis = 1;
        uint64_t pid = ci->busy != 0 ? ci->busy : gi->busy;
        if (pid != 0)
            add_proc(l, pid, gi_id, c);
    }
    if (!has_cis && gi->busy != 0)
        add_proc(l, gi->busy, gi_id, NO_INSTANCE);
}

/* A MIG device: its CI's process; a physical GPU: those of every instance (none with MIG
 * off). Read-only: nothing is written to the state file. */
static enum sim_rc running_processes(sim_device_t device, unsigned int *count, void *infos,
                                     int with_ids)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    struct proc_list list;
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    list.n = 0;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_MIG: {
        uint64_t pid = mig.ci->busy != 0 ? mig.ci->busy : mig.gi->busy;
        if (pid != 0)
            add_proc(&list, pid, mig.gi_id, mig.ci_id);
        break;
    }
    case DEV_GPU:
        for (uint32_t id = 0; gpu->mig_capable && gpu->mode && id < MAX_GIS; id++)
            if (gpu->gis[id].live)
                gi_procs(&gpu->gis[id], id, &list);
        break;
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
    if (list.n == 0) {
        *count = 0;
        return read_end(RC_SUCCESS);
    }
    if (infos == NULL || *count < list.n) {
        *count = list.n;
        return read_end(RC_INSUFFICIENT_SIZE);
    }
    for (unsigned int i = 0; i < list.n; i++) {
        if (with_ids) {
            struct sim_process_info_v2 *p = &((struct sim_process_info_v2 *)infos)[i];
            memset(p, 0, sizeof *p);
            p->pid = list.pid[i];
            p->gpu_instance_id = list.gi[i];
            p->compute_instance_id = list.ci[i];
        } else {
            struct sim_process_info_v1 *p = &((struct sim_process_info_v1 *)infos)[i];
            memset(p, 0, sizeof *p);
            p->pid = list.pid[i];
        }
    }
    *count = list.n;
    return read_end(RC_SUCCESS);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeRunningProcesses(sim_device_t device,
                                                            unsigned int *count,
                                                            struct sim_process_info_v1 *infos)
{
    ENTER_ON(nvmlDeviceGetComputeRunningProcesses, device);
    return running_processes(device, count, infos, 0);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeRunningProcesses_v2(sim_device_t device,
                                                               unsigned int *count,
                                                               struct sim_process_info_v2 *infos)
{
    ENTER_ON(nvmlDeviceGetComputeRunningProcesses_v2, device);
    return running_processes(device, count, infos, 1);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeRunningProcesses_v3(sim_device_t device,
                                                               unsigned int *count,
                                                               struct sim_process_info_v2 *infos)
{
    ENTER_ON(nvmlDeviceGetComputeRunningProcesses_v3, device);
    return running_processes(device, count, infos, 1);
}
