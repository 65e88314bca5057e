/*
 * migkit's NVML simulator: the one header its source files share.
 *
 * The simulator is a shared library (soname libnvidia-ml.so.1) that exports the NVML MIG API
 * over a simulated node kept in a text state file, so that migkit's shim and NVIDIA's own
 * Python binding can be exercised without a GPU. The state file format is described in
 * docs/simulator-state-format.md. The declarations below follow the layouts of NVIDIA's
 * nvml.h; only the ABI (sizes, offsets, the 4-byte return code, pointer handles) has to match.
 *
 * The sources, one seam each:
 *   state_parse.c  reading the state file's text into a struct sim_state
 *   state_file.c   the file on disk: freshness checks, reloads, atomic rewrites, the flock
 *   handles.c      handle slots, MIG UUIDs, resolving handles back to the node
 *   calls.c        every call's entry: counting, injected faults, init/shutdown, the locks
 *   latency.c      the time calls take: MIGKIT_SIM_LATENCY_MS and per-function profiles
 *   device.c       the device API: system, enumeration, identity, MIG mode, MIG devices
 *   instances.c    GPU- and compute-instance profiles, placements and lifecycle rules
 *
 * Concurrency: one process-wide mutex guards the in-memory state; mutating calls also hold
 * flock(<state>.lock) and write the file through <state>.tmp.<pid> + rename. Read-only calls
 * make no system calls except a freshness stat() of the state file at most once per ms.
 *
 * Handles are pointers into static slot tables. GPU- and compute-instance slots carry the
 * unique id of the object they were issued for, so a handle to a destroyed instance is
 * detected (INVALID_ARGUMENT) instead of being dereferenced.
 *
 * Only the NVML entry points (SIM_EXPORT) are visible outside the library; everything this
 * header declares is hidden.
 */
#ifndef MIGKIT_NVML_SIM_H
#define MIGKIT_NVML_SIM_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#pragma GCC visibility push(hidden)

#define SIM_EXPORT __attribute__((visibility("default")))

/* ---------------------------------------------------- return codes (nvmlReturn_t, nvml.h) */

enum sim_rc {
    RC_SUCCESS = 0,
    RC_UNINITIALIZED = 1,
    RC_INVALID_ARGUMENT = 2,
    RC_NOT_SUPPORTED = 3,
    RC_NO_PERMISSION = 4,
    RC_ALREADY_INITIALIZED = 5,
    RC_NOT_FOUND = 6,
    RC_INSUFFICIENT_SIZE = 7,
    RC_INSUFFICIENT_POWER = 8,
    RC_DRIVER_NOT_LOADED = 9,
    RC_TIMEOUT = 10,
    RC_IRQ_ISSUE = 11,
    RC_LIBRARY_NOT_FOUND = 12,
    RC_FUNCTION_NOT_FOUND = 13,
    RC_CORRUPTED_INFOROM = 14,
    RC_GPU_IS_LOST = 15,
    RC_RESET_REQUIRED = 16,
    RC_OPERATING_SYSTEM = 17,
    RC_LIB_RM_VERSION_MISMATCH = 18,
    RC_IN_USE = 19,
    RC_MEMORY = 20,
    RC_NO_DATA = 21,
    RC_VGPU_ECC_NOT_SUPPORTED = 22,
    RC_INSUFFICIENT_RESOURCES = 23,
    RC_FREQ_NOT_SUPPORTED = 24,
    RC_ARGUMENT_VERSION_MISMATCH = 25,
    RC_DEPRECATED = 26,
    RC_NOT_READY = 27,
    RC_GPU_NOT_FOUND = 28,
    RC_INVALID_STATE = 29,
    RC_RESET_TYPE_NOT_SUPPORTED = 30,
    RC_UNKNOWN = 999,
};
/* ------------------------------------------------------------------ documented limits */

#define MAX_GPUS 64
/* GI profile indices 0x0 .. 0x10. Newer headers define 0x11 (3_SLICE_GFX), but the R580
 * driver answers INVALID_ARGUMENT from 0x11 on (observed on 580.159.04, H100 and H200). */
#define GIP_INDEX_COUNT 0x11
#define MAX_GIPS 0x12 /* room for every index nvml.h defines */
#define CIP_INDEX_COUNT 0x9 /* NVML_COMPUTE_INSTANCE_PROFILE_* indices 0x0 .. 0x8 (nvml.h) */
#define MAX_CIPS CIP_INDEX_COUNT
#define MAX_PLACEMENTS 16
#define MAX_GIS 32 /* GI ids per GPU */
#define MAX_CIS 8  /* CI ids per GI */
#define ENGINE_PROFILE_COUNT 1
#define NAME_LEN 96 /* name buffer (v2) */
#define UUID_LEN 96 /* UUID buffer (v2) */
#define BUS_ID_LEN 32
#define MIG_UUID_LEN 41 /* "MIG-" + 36 + NUL */
#define CALL_NAME_LEN 64
#define MAX_CALL_NAMES 256
#define MAX_FIELDS 256
#define MAX_FAULTS 64
#define PATH_LEN 4096
/* Twice the most live objects, so a freed slot is reused only after many others. */
#define GI_SLOTS (2 * MAX_GPUS * MAX_GIS)
#define CI_SLOTS (2 * MAX_GPUS * MAX_GIS * MAX_CIS)

/* GI profile indices with engine rules: 1 and 2 slices with no media engines (NO_ME) or
 * with all of them (ALL_ME), nvml.h. */
#define GIP_1_SLICE_NO_ME 0x0D
#define GIP_2_SLICE_NO_ME 0x0E
#define GIP_1_SLICE_ALL_ME 0x0F
#define GIP_2_SLICE_ALL_ME 0x10

/* Versioned-struct words, as nvml.h's NVML_STRUCT_VERSION: size | version << 24. */
#define VERSION_WORD(size, version) ((unsigned int)(size) | ((unsigned int)(version) << 24))
#define GIP_INFO_V2 VERSION_WORD(152, 2)
#define GIP_INFO_V3 VERSION_WORD(152, 3)
#define CIP_INFO_V2 VERSION_WORD(136, 2)
#define CIP_INFO_V3 VERSION_WORD(140, 3)
#define MEMORY_V2 VERSION_WORD(40, 2)

#define ARCH_HOPPER 9
#define MIB (1024ULL * 1024ULL)

/* ------------------------------------------------------ ABI structs, laid out as in nvml.h */

struct sim_pci_info { /* nvmlPciInfo_t, 68 bytes */
    char bus_id_legacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pci_device_id;
    unsigned int pci_subsystem_id;
    char bus_id[BUS_ID_LEN];
};

struct sim_memory_v1 { /* nvmlMemory_t */
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
};

struct sim_memory_v2 { /* nvmlMemory_v2_t */
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
};

struct sim_gip_info_v1 { /* nvmlGpuInstanceProfileInfo_t */
    unsigned int id, p2p, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long memory_mib;
};

struct sim_gip_info_v2 { /* nvmlGpuInstanceProfileInfo_v2_t */
    unsigned int version, id, p2p, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long memory_mib;
    char name[NAME_LEN];
};

struct sim_gip_info_v3 { /* nvmlGpuInstanceProfileInfo_v3_t: no p2p, capabilities at the end */
    unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long memory_mib;
    char name[NAME_LEN];
    unsigned int caps;
};

struct sim_placement { /* nvmlGpuInstancePlacement_t and nvmlComputeInstancePlacement_t */
    unsigned int start;
    unsigned int size;
};

struct sim_device;
struct sim_gpu_instance;
struct sim_compute_instance;

struct sim_gi_info { /* nvmlGpuInstanceInfo_t */
    struct sim_device *device;
    unsigned int id;
    unsigned int profile_id;
    struct sim_placement placement;
};

struct sim_cip_info_v1 { /* nvmlComputeInstanceProfileInfo_t */
    unsigned int id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
};

struct sim_cip_info_v2 { /* nvmlComputeInstanceProfileInfo_v2_t */
    unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    char name[NAME_LEN];
};

struct sim_cip_info_v3 {
    unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    char name[NAME_LEN];
    unsigned int caps;
};

struct sim_attributes { /* nvmlDeviceAttributes_t */
    unsigned int sm, ce, dec, enc, jpeg, ofa, gi_slices, ci_slices;
    unsigned long long memory_mib;
};

struct sim_ci_info { /* nvmlComputeInstanceInfo_t */
    struct sim_device *device;
    struct sim_gpu_instance *gpu_instance;
    unsigned int id;
    unsigned int profile_id;
    struct sim_placement placement;
};

/* What the running-process queries return. The unversioned entry point keeps the original
 * two-field record; _v2 and _v3 share the record that adds the instance ids. */
struct sim_process_info_v1 {
    unsigned int pid;
    unsigned long long used_memory;
};

struct sim_process_info_v2 {
    unsigned int pid;
    unsigned long long used_memory;
    unsigned int gpu_instance_id;
    unsigned int compute_instance_id;
};

_Static_assert(sizeof(struct sim_pci_info) == 68, "PCI info is 68 bytes");
_Static_assert(offsetof(struct sim_pci_info, bus_id) == 36, "busId at 36");
_Static_assert(sizeof(struct sim_memory_v1) == 24, "memory v1 is 24 bytes");
_Static_assert(sizeof(struct sim_memory_v2) == 40, "memory v2 is 40 bytes");
_Static_assert(offsetof(struct sim_memory_v2, total) == 8, "memory v2 total at 8");
_Static_assert(sizeof(struct sim_gip_info_v1) == 48, "GI profile v1 is 48 bytes");
_Static_assert(offsetof(struct sim_gip_info_v1, memory_mib) == 40, "v1 memory at 40");
_Static_assert(sizeof(struct sim_gip_info_v2) == 152, "GI profile v2 is 152 bytes");
_Static_assert(offsetof(struct sim_gip_info_v2, memory_mib) == 48, "v2 memory at 48");
_Static_assert(offsetof(struct sim_gip_info_v2, name) == 56, "v2 name at 56");
_Static_assert(sizeof(struct sim_gip_info_v3) == 152, "GI profile v3 is 152 bytes");
_Static_assert(offsetof(struct sim_gip_info_v3, memory_mib) == 40, "v3 memory at 40");
_Static_assert(offsetof(struct sim_gip_info_v3, caps) == 144, "v3 caps at 144");
_Static_assert(sizeof(struct sim_gi_info) == 24, "GI info is 24 bytes");
_Static_assert(offsetof(struct sim_gi_info, placement) == 16, "GI placement at 16");
_Static_assert(sizeof(struct sim_cip_info_v1) == 36, "CI profile v1 is 36 bytes");
_Static_assert(sizeof(struct sim_cip_info_v2) == 136, "CI profile v2 is 136 bytes");
_Static_assert(sizeof(struct sim_cip_info_v3) == 140, "CI profile v3 is 140 bytes");
_Static_assert(sizeof(struct sim_attributes) == 40, "attributes are 40 bytes");
_Static_assert(offsetof(struct sim_attributes, memory_mib) == 32, "attributes memory at 32");
_Static_assert(sizeof(struct sim_ci_info) == 32, "CI info is 32 bytes");
_Static_assert(offsetof(struct sim_ci_info, placement) == 24, "CI placement at 24");
_Static_assert(sizeof(struct sim_process_info_v1) == 16, "process info v1 is 16 bytes");
_Static_assert(sizeof(struct sim_process_info_v2) == 24, "process info v2 is 24 bytes");
_Static_assert(offsetof(struct sim_process_info_v2, used_memory) == 8, "usedGpuMemory at 8");
_Static_assert(offsetof(struct sim_process_info_v2, gpu_instance_id) == 16, "GI id at 16");
_Static_assert(offsetof(struct sim_process_info_v2, compute_instance_id) == 20, "CI id at 20");

/* ------------------------------------------------------------------ simulated node */

struct sim_span {
    uint32_t start;
    uint32_t size;
};

struct sim_cip { /* a `cip` record */
    uint32_t index, id, slices, instances, sm, ce, dec, enc, jpeg, ofa, caps;
    uint32_t nplacements;
    struct sim_span placements[MAX_PLACEMENTS];
    char name[NAME_LEN];
};

struct sim_gip { /* a `gip` record and its `cip` records */
    uint32_t index, id, slices, mslices, instances, sm, ce, dec, enc, jpeg, ofa, p2p, caps;
    uint64_t memory, devmem; /* MiB */
    uint32_t nplacements, norder, ncips;
    struct sim_span placements[MAX_PLACEMENTS];
    uint32_t order[MAX_PLACEMENTS];
    struct sim_cip cips[MAX_CIPS];
    char name[NAME_LEN];
};

struct sim_ci { /* a `ci` record, at cis[id] of its GI */
    uint8_t live;
    uint32_t profile; /* CI profile ID */
    uint32_t cip;     /* position in the GI profile's cips[] */
    uint32_t start, size;
    uint64_t busy;
    uint64_t uid;  /* unique in this process; ties handles to this very CI */
    uint32_t slot; /* its compute-instance and MIG-device handle slot */
    char uuid[MIG_UUID_LEN];
};

struct sim_gi { /* a `gi` record, at gis[id] of its GPU */
    uint8_t live;
    uint32_t profile; /* GI profile ID */
    uint32_t gip;     /* position in the GPU's gips[] */
    uint32_t start, size;
    uint64_t busy;
    uint64_t uid;
    uint32_t slot;
    struct sim_ci cis[MAX_CIS];
};

struct sim_gpu { /* a `gpu` record */
    uint32_t index, pci, subsys, arch, mig_capable, mode, pending, max_mig, minor;
    uint64_t memory;  /* MiB */
    uint32_t mslices; /* memory slices of the whole GPU (largest placement end) */
    uint32_t ngips;
    uint32_t pci_domain, pci_bus, pci_dev; /* parsed from `bus` */
    char uuid[UUID_LEN];
    char bus[BUS_ID_LEN];
    char name[NAME_LEN];
    struct sim_gip gips[MAX_GIPS];
    struct sim_gi gis[MAX_GIS];
};

struct sim_call {
    char name[CALL_NAME_LEN];
    uint64_t count;
    uint64_t charged_ns; /* time charged by a latency profile */
};

struct sim_state {
    char driver[80];
    char cuda[16];
    uint32_t ngpus;
    uint32_t ncalls;
    struct sim_gpu gpus[MAX_GPUS];
    struct sim_call calls[MAX_CALL_NAMES];
};

/* ------------------------------------------------------------------ handles */

#define DEVICE_MAGIC 0x6d69676bU /* "migk" */

struct sim_device { /* physical: g_gpu_handles[gpu]; MIG device: g_mig_handles[ci slot] */
    uint32_t magic;
    uint32_t gpu;
};

struct sim_gpu_instance {
    uint64_t uid; /* 0 = free slot */
    uint32_t gpu, id;
};

struct sim_compute_instance {
    uint64_t uid;
    uint32_t gpu, gi, id;
};

typedef struct sim_device *sim_device_t;
typedef struct sim_gpu_instance *sim_gpu_instance_t;
typedef struct sim_compute_instance *sim_compute_instance_t;

/* ------------------------------------------------------------------ exported functions */

/* Every exported name, for call counting and fault injection. M = mutating (latency applies). */
#define SIM_FUNCTIONS(R, M)                                                                     \
    R(nvmlInit) R(nvmlInit_v2) R(nvmlInitWithFlags) R(nvmlShutdown) R(nvmlErrorString)           \
    R(nvmlSystemGetDriverVersion) R(nvmlSystemGetNVMLVersion) R(nvmlSystemGetCudaDriverVersion)  \
    R(nvmlSystemGetCudaDriverVersion_v2) R(nvmlDeviceGetCount) R(nvmlDeviceGetCount_v2)          \
    R(nvmlDeviceGetHandleByIndex) R(nvmlDeviceGetHandleByIndex_v2) R(nvmlDeviceGetHandleByUUID)  \
    R(nvmlDeviceGetHandleByPciBusId) R(nvmlDeviceGetHandleByPciBusId_v2)                         \
    R(nvmlDeviceGetPciInfo) R(nvmlDeviceGetPciInfo_v2) R(nvmlDeviceGetPciInfo_v3)                \
    R(nvmlDeviceGetMinorNumber) R(nvmlDeviceGetIndex) R(nvmlDeviceGetName) R(nvmlDeviceGetUUID)  \
    R(nvmlDeviceGetArchitecture) R(nvmlDeviceGetMemoryInfo) R(nvmlDeviceGetMemoryInfo_v2)        \
    R(nvmlDeviceGetAttributes) R(nvmlDeviceGetAttributes_v2) M(nvmlDeviceSetMigMode)             \
    R(nvmlDeviceGetMigMode) R(nvmlDeviceGetGpuInstanceProfileInfo)                               \
    R(nvmlDeviceGetGpuInstanceProfileInfoV) R(nvmlDeviceGetGpuInstanceProfileInfoByIdV)          \
    R(nvmlDeviceGetGpuInstancePossiblePlacements)                                                \
    R(nvmlDeviceGetGpuInstancePossiblePlacements_v2) R(nvmlDeviceGetGpuInstanceRemainingCapacity)\
    M(nvmlDeviceCreateGpuInstance) M(nvmlDeviceCreateGpuInstanceWithPlacement)                   \
    M(nvmlGpuInstanceDestroy) R(nvmlDeviceGetGpuInstances) R(nvmlDeviceGetGpuInstanceById)       \
    R(nvmlGpuInstanceGetInfo) R(nvmlGpuInstanceGetComputeInstanceProfileInfo)                    \
    R(nvmlGpuInstanceGetComputeInstanceProfileInfoV)                                             \
    R(nvmlGpuInstanceGetComputeInstanceRemainingCapacity)                                        \
    R(nvmlGpuInstanceGetComputeInstancePossiblePlacements)                                       \
    M(nvmlGpuInstanceCreateComputeInstance) M(nvmlGpuInstanceCreateComputeInstanceWithPlacement) \
    M(nvmlComputeInstanceDestroy) R(nvmlGpuInstanceGetComputeInstances)                          \
    R(nvmlGpuInstanceGetComputeInstanceById) R(nvmlComputeInstanceGetInfo)                       \
    R(nvmlComputeInstanceGetInfo_v2) R(nvmlDeviceIsMigDeviceHandle)                              \
    R(nvmlDeviceGetGpuInstanceId) R(nvmlDeviceGetComputeInstanceId)                              \
    R(nvmlDeviceGetMaxMigDeviceCount) R(nvmlDeviceGetMigDeviceHandleByIndex)                     \
    R(nvmlDeviceGetDeviceHandleFromMigDeviceHandle) R(nvmlDeviceGetComputeRunningProcesses)     \
    R(nvmlDeviceGetComputeRunningProcesses_v2) R(nvmlDeviceGetComputeRunningProcesses_v3)

#define SIM_FN_ENUM(name) FN_##name,
enum sim_fn { SIM_FUNCTIONS(SIM_FN_ENUM, SIM_FN_ENUM) FN_COUNT };
#undef SIM_FN_ENUM



/* ------------------------------------------------------------------ small helpers */

/* ------------------------------------------------------------------ small helpers */

static inline void copy_string(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static inline int spans_overlap(uint32_t a_start, uint32_t a_size, uint32_t b_start,
                                uint32_t b_size)
{
    return a_start < b_start + b_size && b_start < a_start + a_size;
}

static inline struct sim_gip *find_gip_by_id(struct sim_gpu *gpu, uint32_t id)
{
    for (uint32_t i = 0; i < gpu->ngips; i++)
        if (gpu->gips[i].id == id)
            return &gpu->gips[i];
    return NULL;
}

static inline struct sim_gip *find_gip_by_index(struct sim_gpu *gpu, uint32_t index)
{
    for (uint32_t i = 0; i < gpu->ngips; i++)
        if (gpu->gips[i].index == index)
            return &gpu->gips[i];
    return NULL;
}

static inline struct sim_cip *find_cip_by_id(struct sim_gip *gip, uint32_t id)
{
    for (uint32_t i = 0; i < gip->ncips; i++)
        if (gip->cips[i].id == id)
            return &gip->cips[i];
    return NULL;
}

static inline struct sim_cip *find_cip_by_index(struct sim_gip *gip, uint32_t index)
{
    for (uint32_t i = 0; i < gip->ncips; i++)
        if (gip->cips[i].index == index)
            return &gip->cips[i];
    return NULL;
}

static inline int gip_is_all_me(const struct sim_gip *gip)
{
    return gip->index == GIP_1_SLICE_ALL_ME || gip->index == GIP_2_SLICE_ALL_ME;
}

static inline int gip_is_no_me(const struct sim_gip *gip)
{
    return gip->index == GIP_1_SLICE_NO_ME || gip->index == GIP_2_SLICE_NO_ME;
}


/* ------------------------------------------------------------------ shared state */

extern struct sim_state *g_cur; /* the node as last read or written; under the mutex */

/* calls.c */
__attribute__((format(printf, 1, 2))) void sim_debug(const char *fmt, ...);
enum sim_rc enter(enum sim_fn fn, const void *handle);
enum sim_rc enter_mutating(enum sim_fn fn, const void *handle);
enum sim_rc read_begin(void);
enum sim_rc read_end(enum sim_rc rc);
enum sim_rc write_begin(void);
enum sim_rc write_end(enum sim_rc rc);

/* Enter a read call about no GPU in particular. */
#define ENTER(fn) ENTER_ON(fn, NULL)

/* Enter a read call about the GPU that `handle` (device, GI or CI handle) belongs to. */
#define ENTER_ON(fn, handle)                                                                   \
    do {                                                                                       \
        enum sim_rc enter_rc_ = enter(FN_##fn, (handle));                                      \
        if (enter_rc_ != RC_SUCCESS)                                                           \
            return enter_rc_;                                                                  \
    } while (0)

#define ENTER_MUTATING(fn, handle)                                                             \
    do {                                                                                       \
        enum sim_rc enter_rc_ = enter_mutating(FN_##fn, (handle));                             \
        if (enter_rc_ != RC_SUCCESS)                                                           \
            return enter_rc_;                                                                  \
    } while (0)

/* Why a state file could not be used: a reason, and the 1-based line (0: the whole file). */
#define STATE_ERROR_LEN 200
struct state_error {
    unsigned int line;
    char reason[STATE_ERROR_LEN + 64];
};

/* state_parse.c */
int parse_u64(const char *s, size_t len, uint64_t *out);
int add_call_totals(struct sim_state *st, const char *name, size_t len, uint64_t count,
                    uint64_t charged_ns);
int parse_state(const char *buf, size_t len, struct sim_state *st, struct state_error *err);

/* state_file.c */
int state_file_open(const char *path);
int state_file_reload(void);
int state_file_refresh(void);
void state_file_refresh_for_read(void);
void state_file_refresh_now(void);
int state_file_write(void);
int state_file_exists(void);
void state_file_clear_error(void);
int state_file_last_error(char *reason, unsigned int cap, unsigned int *line);
int lock_file(void);
void unlock_file(void);
void close_lock_file(void);

/* latency.c */
int latency_configure(void);
void latency_charge(enum sim_fn fn, const void *handle, int mutating);
void latency_charge_profile_info(enum sim_fn fn, const void *handle, enum sim_rc rc);
uint64_t latency_lifecycle_cost(enum sim_fn fn);
void latency_settle(enum sim_fn fn, uint64_t ns);
uint64_t latency_take_charged(enum sim_fn fn);
int latency_have_charged(void);
void latency_after_fork(void);

/* handles.c */
struct mig_ref {
    struct sim_gpu *gpu;
    struct sim_gi *gi;
    struct sim_ci *ci;
    uint32_t gi_id, ci_id;
};

enum device_kind { DEV_BAD, DEV_GPU, DEV_MIG };

void init_gpu_handles(void);
int gpu_index_of_handle(const void *handle);
void carry_handles(struct sim_state *old, struct sim_state *next);
void bind_gi(uint32_t gpu, uint32_t id, struct sim_gi *gi);
void bind_ci(const struct sim_gpu *g, uint32_t gi_id, uint32_t id, struct sim_ci *ci);
void release_ci(struct sim_ci *ci);
void release_gi(struct sim_gi *gi);
struct sim_gpu *gpu_of(const struct sim_device *h);
int ci_of(const struct sim_compute_instance *h, struct mig_ref *ref);
struct sim_gi *gi_of(const struct sim_gpu_instance *h, struct sim_gpu **gpu_out, uint32_t *id_out);
enum device_kind resolve_device(const struct sim_device *h, struct sim_gpu **gpu,
                                struct mig_ref *mig);
sim_device_t gpu_handle(const struct sim_gpu *gpu);
sim_device_t mig_handle(const struct sim_ci *ci);
sim_gpu_instance_t gi_handle(const struct sim_gi *gi);
sim_compute_instance_t ci_handle(const struct sim_ci *ci);

/* device.c, for instances.c */
enum sim_rc mig_gpu(sim_device_t device, struct sim_gpu **gpu);
enum sim_rc mig_enabled_gpu(sim_device_t device, struct sim_gpu **gpu);

#pragma GCC visibility pop

#endif /* MIGKIT_NVML_SIM_H */
