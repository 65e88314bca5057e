/*
 * migkit's NVML simulator.
 *
 * A shared library (soname libnvidia-ml.so.1) that exports the NVML MIG API over a simulated
 * node kept in a text state file, so that migkit's shim and NVIDIA's own Python binding can be
 * exercised without a GPU. The state file format is described in
 * docs/simulator-state-format.md; the behaviour follows the project's NVML fact sheet
 * (argument checks, error codes, placement rules, Ampere pending mode, ...). The declarations
 * below are written from the fact sheet's layout tables; only the ABI (sizes, offsets, the
 * 4-byte return code, pointer handles) has to match.
 *
 * Concurrency: one process-wide mutex guards the in-memory state; mutating calls also hold
 * flock(<state>.lock) and write the file through <state>.tmp.<pid> + rename. Read-only calls
 * make no system calls except a freshness stat() of the state file at most once per ms.
 *
 * Handles are pointers into static slot tables. GPU- and compute-instance slots carry the
 * unique id of the object they were issued for, so a handle to a destroyed instance is
 * detected (INVALID_ARGUMENT) instead of being dereferenced.
 */
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

#define SIM_EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------ return codes (§4.6) */

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

/* Error names (for MIGKIT_SIM_FAULTS) and the texts nvmlErrorString returns. */
static const struct {
    enum sim_rc rc;
    const char *name;
    const char *text;
} g_rc_table[] = {
    {RC_SUCCESS, "SUCCESS", "Success"},
    {RC_UNINITIALIZED, "UNINITIALIZED", "Uninitialized"},
    {RC_INVALID_ARGUMENT, "INVALID_ARGUMENT", "Invalid Argument"},
    {RC_NOT_SUPPORTED, "NOT_SUPPORTED", "Not Supported"},
    {RC_NO_PERMISSION, "NO_PERMISSION", "Insufficient Permissions"},
    {RC_ALREADY_INITIALIZED, "ALREADY_INITIALIZED", "Already Initialized"},
    {RC_NOT_FOUND, "NOT_FOUND", "Not Found"},
    {RC_INSUFFICIENT_SIZE, "INSUFFICIENT_SIZE", "Insufficient Size"},
    {RC_INSUFFICIENT_POWER, "INSUFFICIENT_POWER", "Insufficient External Power"},
    {RC_DRIVER_NOT_LOADED, "DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {RC_TIMEOUT, "TIMEOUT", "Timeout"},
    {RC_IRQ_ISSUE, "IRQ_ISSUE", "Interrupt Request Issue"},
    {RC_LIBRARY_NOT_FOUND, "LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {RC_FUNCTION_NOT_FOUND, "FUNCTION_NOT_FOUND", "Function Not Found"},
    {RC_CORRUPTED_INFOROM, "CORRUPTED_INFOROM", "Corrupted infoROM"},
    {RC_GPU_IS_LOST, "GPU_IS_LOST", "GPU is lost"},
    {RC_RESET_REQUIRED, "RESET_REQUIRED", "GPU requires restart"},
    {RC_OPERATING_SYSTEM, "OPERATING_SYSTEM", "The operating system has blocked the request"},
    {RC_LIB_RM_VERSION_MISMATCH, "LIB_RM_VERSION_MISMATCH",
     "RM has detected an NVML/RM version mismatch"},
    {RC_IN_USE, "IN_USE", "In use by another client"},
    {RC_MEMORY, "MEMORY", "Insufficient Memory"},
    {RC_NO_DATA, "NO_DATA", "No data"},
    {RC_VGPU_ECC_NOT_SUPPORTED, "VGPU_ECC_NOT_SUPPORTED",
     "The requested vgpu operation is not available on target device, because ECC is enabled"},
    {RC_INSUFFICIENT_RESOURCES, "INSUFFICIENT_RESOURCES", "Insufficient Resources"},
    {RC_FREQ_NOT_SUPPORTED, "FREQ_NOT_SUPPORTED", "Frequency not supported"},
    {RC_ARGUMENT_VERSION_MISMATCH, "ARGUMENT_VERSION_MISMATCH", "Argument version mismatch"},
    {RC_DEPRECATED, "DEPRECATED", "Function deprecated"},
    {RC_NOT_READY, "NOT_READY", "System is not ready"},
    {RC_GPU_NOT_FOUND, "GPU_NOT_FOUND", "GPU not found"},
    {RC_INVALID_STATE, "INVALID_STATE", "Invalid state"},
    {RC_RESET_TYPE_NOT_SUPPORTED, "RESET_TYPE_NOT_SUPPORTED", "Reset type not supported"},
    {RC_UNKNOWN, "UNKNOWN", "Unknown Error"},
};

/* ------------------------------------------------------------------ documented limits */

#define MAX_GPUS 64
#define GIP_INDEX_COUNT 0x12 /* GI profile indices 0x0 .. 0x11 (§4.2) */
#define MAX_GIPS GIP_INDEX_COUNT
#define CIP_INDEX_COUNT 0x9 /* CI profile indices 0x0 .. 0x8 (§4.3) */
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

/* Profile indices with special rules (§4.2). */
#define GIP_1_SLICE_NO_ME 0x0D
#define GIP_2_SLICE_NO_ME 0x0E
#define GIP_1_SLICE_ALL_ME 0x0F
#define GIP_2_SLICE_ALL_ME 0x10

/* Versioned-struct words: size | version << 24 (§1, §3). */
#define VERSION_WORD(size, version) ((unsigned int)(size) | ((unsigned int)(version) << 24))
#define GIP_INFO_V2 VERSION_WORD(152, 2)
#define GIP_INFO_V3 VERSION_WORD(152, 3)
#define CIP_INFO_V2 VERSION_WORD(136, 2)
#define CIP_INFO_V3 VERSION_WORD(140, 3)
#define MEMORY_V2 VERSION_WORD(40, 2)

#define ARCH_HOPPER 9
#define MIB (1024ULL * 1024ULL)

/* ------------------------------------------------------------------ ABI structs (§3) */

struct sim_pci_info { /* §3.1, 68 bytes */
    char bus_id_legacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pci_device_id;
    unsigned int pci_subsystem_id;
    char bus_id[BUS_ID_LEN];
};

struct sim_memory_v1 { /* §3.2 */
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
};

struct sim_memory_v2 { /* §3.3 */
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
};

struct sim_gip_info_v1 { /* §3.4 */
    unsigned int id, p2p, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long memory_mib;
};

struct sim_gip_info_v2 { /* §3.5 */
    unsigned int version, id, p2p, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long memory_mib;
    char name[NAME_LEN];
};

struct sim_gip_info_v3 { /* §3.6: no p2p, capabilities at the end */
    unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long memory_mib;
    char name[NAME_LEN];
    unsigned int caps;
};

struct sim_placement { /* §3.7 and §3.12 */
    unsigned int start;
    unsigned int size;
};

struct sim_device;
struct sim_gpu_instance;
struct sim_compute_instance;

struct sim_gi_info { /* §3.8 */
    struct sim_device *device;
    unsigned int id;
    unsigned int profile_id;
    struct sim_placement placement;
};

struct sim_cip_info_v1 { /* §3.9 */
    unsigned int id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
};

struct sim_cip_info_v2 { /* §3.10 */
    unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    char name[NAME_LEN];
};

struct sim_cip_info_v3 {
    unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
    char name[NAME_LEN];
    unsigned int caps;
};

struct sim_attributes { /* §3.11 */
    unsigned int sm, ce, dec, enc, jpeg, ofa, gi_slices, ci_slices;
    unsigned long long memory_mib;
};

struct sim_ci_info { /* §3.12 */
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

#define SIM_FN_NAME(name) #name,
static const char *const g_fn_names[FN_COUNT] = {SIM_FUNCTIONS(SIM_FN_NAME, SIM_FN_NAME)};
#undef SIM_FN_NAME

/* ------------------------------------------------------------------ process state */

static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct sim_state g_states[2]; /* the current one and the one a reload parses into */
static struct sim_state *g_cur = &g_states[0];
static unsigned int g_init_count; /* read without the mutex through __atomic loads */

struct file_sig {
    int valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static char g_path[PATH_LEN];
static char g_lock_path[PATH_LEN + 8];
static int g_lock_fd = -1;
static struct file_sig g_sig;            /* of the file g_cur was read from or written to */
static struct timespec g_last_check;     /* last freshness stat() by a read-only call */
static uint64_t g_next_uid = 1;          /* uids of GIs and CIs; 0 marks a free slot */
static uint32_t g_gi_cursor, g_ci_cursor; /* round-robin slot allocation */

static struct sim_device g_gpu_handles[MAX_GPUS];
static struct sim_device g_mig_handles[CI_SLOTS];
static struct sim_gpu_instance g_gi_slots[GI_SLOTS];
static struct sim_compute_instance g_ci_slots[CI_SLOTS];

static uint64_t g_unflushed[FN_COUNT];  /* calls not yet merged into the file */
static uint64_t g_since_init[FN_COUNT]; /* calls since the last 0 -> 1 init (fault numbering) */

struct sim_fault {
    enum sim_fn fn;
    uint64_t nth;
    enum sim_rc rc;
};

static struct sim_fault g_faults[MAX_FAULTS];
static uint32_t g_nfaults;
static uint8_t g_fault_fn[FN_COUNT]; /* whether any fault names this function */
static struct timespec g_latency;    /* slept before each mutating call */
static int g_debug;

__attribute__((format(printf, 1, 2))) static void sim_debug(const char *fmt, ...)
{
    if (!g_debug)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("migkit-sim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ------------------------------------------------------------------ small helpers */

static void copy_string(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int spans_overlap(uint32_t a_start, uint32_t a_size, uint32_t b_start, uint32_t b_size)
{
    return a_start < b_start + b_size && b_start < a_start + a_size;
}

static struct sim_gip *find_gip_by_id(struct sim_gpu *gpu, uint32_t id)
{
    for (uint32_t i = 0; i < gpu->ngips; i++)
        if (gpu->gips[i].id == id)
            return &gpu->gips[i];
    return NULL;
}

static struct sim_gip *find_gip_by_index(struct sim_gpu *gpu, uint32_t index)
{
    for (uint32_t i = 0; i < gpu->ngips; i++)
        if (gpu->gips[i].index == index)
            return &gpu->gips[i];
    return NULL;
}

static struct sim_cip *find_cip_by_id(struct sim_gip *gip, uint32_t id)
{
    for (uint32_t i = 0; i < gip->ncips; i++)
        if (gip->cips[i].id == id)
            return &gip->cips[i];
    return NULL;
}

static struct sim_cip *find_cip_by_index(struct sim_gip *gip, uint32_t index)
{
    for (uint32_t i = 0; i < gip->ncips; i++)
        if (gip->cips[i].index == index)
            return &gip->cips[i];
    return NULL;
}

static int gip_is_all_me(const struct sim_gip *gip)
{
    return gip->index == GIP_1_SLICE_ALL_ME || gip->index == GIP_2_SLICE_ALL_ME;
}

static int gip_is_no_me(const struct sim_gip *gip)
{
    return gip->index == GIP_1_SLICE_NO_ME || gip->index == GIP_2_SLICE_NO_ME;
}

/* ------------------------------------------------------------------ state file parser */

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
        if (rec->nfields == MAX_FIELDS)
            return -1;
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

static int parse_u64(const char *s, size_t len, uint64_t *out)
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
    if (f == NULL)
        return required ? -1 : 0;
    return parse_u64(f->val, f->vlen, out);
}

static int get_u32(const struct sim_record *rec, const char *key, uint32_t *out, int required)
{
    uint64_t v = *out;
    if (get_u64(rec, key, &v, required) != 0 || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int get_str(const struct sim_record *rec, const char *key, char *buf, size_t cap)
{
    const struct sim_field *f = rec_get(rec, key);
    if (f == NULL)
        return 0;
    if (f->vlen >= cap)
        return -1;
    memcpy(buf, f->val, f->vlen);
    buf[f->vlen] = '\0';
    return 0;
}

/* "0:1,1:1" or "-" (none). */
static int get_spans(const struct sim_record *rec, const char *key, struct sim_span *out,
                     uint32_t *n)
{
    const struct sim_field *f = rec_get(rec, key);
    *n = 0;
    if (f == NULL || (f->vlen == 1 && f->val[0] == '-'))
        return 0;
    const char *p = f->val, *end = f->val + f->vlen;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        const char *colon = memchr(p, ':', (size_t)(item_end - p));
        uint64_t start, size;
        if (*n == MAX_PLACEMENTS || colon == NULL ||
            parse_u64(p, (size_t)(colon - p), &start) != 0 ||
            parse_u64(colon + 1, (size_t)(item_end - colon - 1), &size) != 0 || size == 0 ||
            start > 64 || size > 64)
            return -1;
        out[*n].start = (uint32_t)start;
        out[*n].size = (uint32_t)size;
        (*n)++;
        p = comma ? comma + 1 : end;
    }
    return 0;
}

/* "6,4,5" or "-". */
static int get_list(const struct sim_record *rec, const char *key, uint32_t *out, uint32_t *n)
{
    const struct sim_field *f = rec_get(rec, key);
    *n = 0;
    if (f == NULL || (f->vlen == 1 && f->val[0] == '-'))
        return 0;
    const char *p = f->val, *end = f->val + f->vlen;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        uint64_t v;
        if (*n == MAX_PLACEMENTS || parse_u64(p, (size_t)(item_end - p), &v) != 0 || v > 64)
            return -1;
        out[(*n)++] = (uint32_t)v;
        p = comma ? comma + 1 : end;
    }
    return 0;
}

static int add_call_count(struct sim_state *st, const char *name, size_t len, uint64_t n)
{
    if (len == 0 || len >= CALL_NAME_LEN)
        return -1;
    for (uint32_t i = 0; i < st->ncalls; i++) {
        if (strlen(st->calls[i].name) == len && memcmp(st->calls[i].name, name, len) == 0) {
            st->calls[i].count += n;
            return 0;
        }
    }
    if (st->ncalls == MAX_CALL_NAMES)
        return -1;
    struct sim_call *c = &st->calls[st->ncalls++];
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    c->count = n;
    return 0;
}

static int parse_gpu_record(const struct sim_record *rec, struct sim_state *st)
{
    uint32_t index = 0;
    if (get_u32(rec, "index", &index, 1) != 0 || index != st->ngpus || st->ngpus == MAX_GPUS)
        return -1;
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
    if (gpu->mode > 1 || gpu->pending > 1 || gpu->uuid[0] == '\0')
        return -1;
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
    if (get_u32(rec, "gpu", &index, 1) != 0 || index >= st->ngpus)
        return NULL;
    return &st->gpus[index];
}

static int parse_gip_record(const struct sim_record *rec, struct sim_state *st)
{
    struct sim_gpu *gpu = record_gpu(rec, st);
    if (gpu == NULL || gpu->ngips == MAX_GIPS)
        return -1;
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
        get_spans(rec, "placements", g.placements, &g.nplacements) != 0 ||
        get_list(rec, "order", g.order, &g.norder) != 0 ||
        get_str(rec, "name", g.name, sizeof g.name) != 0)
        return -1;
    g.devmem = g.memory;
    if (get_u64(rec, "devmem", &g.devmem, 0) != 0 || g.index >= GIP_INDEX_COUNT)
        return -1;
    if (find_gip_by_index(gpu, g.index) != NULL || find_gip_by_id(gpu, g.id) != NULL)
        return -1;
    for (uint32_t i = 0; i < g.nplacements; i++) {
        if (g.mslices == 0)
            g.mslices = g.placements[i].size;
        if (g.placements[i].size != g.mslices)
            return -1;
        uint32_t end = g.placements[i].start + g.placements[i].size;
        if (end > gpu->mslices)
            gpu->mslices = end;
    }
    /* Every start in `order` must be a possible placement; no order = placement order. */
    for (uint32_t i = 0; i < g.norder; i++) {
        uint32_t k = 0;
        while (k < g.nplacements && g.placements[k].start != g.order[i])
            k++;
        if (k == g.nplacements)
            return -1;
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
    if (gip == NULL || gip->ncips == MAX_CIPS)
        return -1;
    struct sim_cip c;
    memset(&c, 0, sizeof c);
    if (get_u32(rec, "index", &c.index, 1) != 0 || get_u32(rec, "id", &c.id, 1) != 0 ||
        get_u32(rec, "slices", &c.slices, 0) != 0 ||
        get_u32(rec, "instances", &c.instances, 0) != 0 || get_u32(rec, "sm", &c.sm, 0) != 0 ||
        get_u32(rec, "ce", &c.ce, 0) != 0 || get_u32(rec, "dec", &c.dec, 0) != 0 ||
        get_u32(rec, "enc", &c.enc, 0) != 0 || get_u32(rec, "jpeg", &c.jpeg, 0) != 0 ||
        get_u32(rec, "ofa", &c.ofa, 0) != 0 || get_u32(rec, "caps", &c.caps, 0) != 0 ||
        get_spans(rec, "placements", c.placements, &c.nplacements) != 0 ||
        get_str(rec, "name", c.name, sizeof c.name) != 0)
        return -1;
    if (c.index >= CIP_INDEX_COUNT || find_cip_by_index(gip, c.index) != NULL ||
        find_cip_by_id(gip, c.id) != NULL)
        return -1;
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
    if (id >= MAX_GIS || gpu->gis[id].live || gip == NULL || size == 0)
        return -1;
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
    if (gi_id >= MAX_GIS || !gpu->gis[gi_id].live || id >= MAX_CIS || size == 0)
        return -1;
    struct sim_gi *gi = &gpu->gis[gi_id];
    struct sim_cip *cip = find_cip_by_id(&gpu->gips[gi->gip], profile);
    if (cip == NULL || gi->cis[id].live)
        return -1;
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

static int parse_calls_record(const struct sim_record *rec, struct sim_state *st)
{
    for (uint32_t i = 0; i < rec->nfields; i++) {
        uint64_t n;
        const struct sim_field *f = &rec->fields[i];
        if (parse_u64(f->val, f->vlen, &n) != 0 || add_call_count(st, f->key, f->klen, n) != 0)
            return -1;
    }
    return 0;
}

/*
 * Parse a whole state file into st. Three passes, so records may refer to records further
 * down: GPUs, GI profiles and counts first, then CI profiles and GIs, then CIs.
 */
static int parse_state(const char *buf, size_t len, struct sim_state *st)
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
            } else if (pass == 0 && kw_is(&rec, "driver")) {
                rc = get_str(&rec, "version", st->driver, sizeof st->driver) |
                     get_str(&rec, "cuda", st->cuda, sizeof st->cuda);
            } else if (pass == 0 && kw_is(&rec, "gpu")) {
                rc = parse_gpu_record(&rec, st);
            } else if (pass == 0 && kw_is(&rec, "gip")) {
                rc = parse_gip_record(&rec, st);
            } else if (pass == 0 && kw_is(&rec, "calls")) {
                rc = parse_calls_record(&rec, st);
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
                sim_debug("state file line %u: bad record", lineno);
                return -1;
            }
        }
        if (!seen_header) {
            sim_debug("state file: missing 'migkit-sim version=1'");
            return -1;
        }
    }
    return 0;
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

static void bind_gi(uint32_t gpu, uint32_t id, struct sim_gi *gi)
{
    gi->uid = g_next_uid++;
    for (uint32_t n = 0; n < GI_SLOTS; n++) {
        uint32_t i = (g_gi_cursor + n) % GI_SLOTS;
        if (g_gi_slots[i].uid == 0) {
            g_gi_slots[i].uid = gi->uid;
            g_gi_slots[i].gpu = gpu;
            g_gi_slots[i].id = id;
            gi->slot = i;
            g_gi_cursor = (i + 1) % GI_SLOTS;
            return;
        }
    }
    gi->slot = UINT32_MAX; /* unreachable: there are twice as many slots as live GIs */
}

static void bind_ci(const struct sim_gpu *g, uint32_t gi_id, uint32_t id, struct sim_ci *ci)
{
    ci->uid = g_next_uid++;
    make_mig_uuid(g->uuid, gi_id, id, ci->uuid);
    for (uint32_t n = 0; n < CI_SLOTS; n++) {
        uint32_t i = (g_ci_cursor + n) % CI_SLOTS;
        if (g_ci_slots[i].uid == 0) {
            g_ci_slots[i].uid = ci->uid;
            g_ci_slots[i].gpu = g->index;
            g_ci_slots[i].gi = gi_id;
            g_ci_slots[i].id = id;
            g_mig_handles[i].magic = DEVICE_MAGIC;
            g_mig_handles[i].gpu = g->index;
            ci->slot = i;
            g_ci_cursor = (i + 1) % CI_SLOTS;
            return;
        }
    }
    ci->slot = UINT32_MAX;
}

static void release_ci(struct sim_ci *ci)
{
    if (ci->slot < CI_SLOTS && g_ci_slots[ci->slot].uid == ci->uid) {
        g_ci_slots[ci->slot].uid = 0;
        g_mig_handles[ci->slot].magic = 0;
    }
    ci->live = 0;
}

static void release_gi(struct sim_gi *gi)
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
static void carry_handles(struct sim_state *old, struct sim_state *next)
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

/* ------------------------------------------------------------------ the state file */

static void sig_from_stat(const struct stat *sb, struct file_sig *sig)
{
    sig->valid = 1;
    sig->dev = sb->st_dev;
    sig->ino = sb->st_ino;
    sig->size = sb->st_size;
    sig->mtime = sb->st_mtim;
}

static int sig_equal(const struct file_sig *a, const struct file_sig *b)
{
    return a->valid && b->valid && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static int read_state_file(const char *path, struct sim_state *st, struct file_sig *sig)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (off_t)(64 * MIB)) {
        close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size, got = 0;
    char *buf = malloc(len + 1);
    if (buf == NULL) {
        close(fd);
        return -1;
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    int rc = got == len ? parse_state(buf, len, st) : -1;
    free(buf);
    if (rc == 0)
        sig_from_stat(&sb, sig);
    return rc;
}

/* Parse the file into the spare buffer, carry the handles over, make it current. */
static int reload(void)
{
    struct sim_state *next = g_cur == &g_states[0] ? &g_states[1] : &g_states[0];
    struct file_sig sig;
    if (read_state_file(g_path, next, &sig) != 0) {
        sim_debug("cannot read %s", g_path);
        return -1;
    }
    carry_handles(g_cur, next);
    g_cur = next;
    g_sig = sig;
    return 0;
}

/* Re-read the file if its (device, inode, size, mtime) changed. */
static int refresh(void)
{
    struct stat sb;
    struct file_sig now;
    if (stat(g_path, &sb) != 0)
        return -1;
    sig_from_stat(&sb, &now);
    if (sig_equal(&now, &g_sig))
        return 0;
    return reload();
}

/* Read-only calls: at most one stat() per millisecond; on failure keep the last good state. */
static void refresh_for_read(void)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return;
    int64_t elapsed_ns = (int64_t)(now.tv_sec - g_last_check.tv_sec) * 1000000000LL +
                         (now.tv_nsec - g_last_check.tv_nsec);
    if (elapsed_ns >= 0 && elapsed_ns < 1000000LL)
        return;
    g_last_check = now;
    if (refresh() != 0)
        sim_debug("keeping the last good state of %s", g_path);
}

static void format_spans(char *buf, size_t cap, const struct sim_span *s, uint32_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    if (n == 0) {
        copy_string(buf, cap, "-");
        return;
    }
    for (uint32_t i = 0; i < n && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%u:%u", i ? "," : "", s[i].start, s[i].size);
        if (w < 0)
            return;
        used += (size_t)w;
    }
}

static void format_list(char *buf, size_t cap, const uint32_t *v, uint32_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    if (n == 0) {
        copy_string(buf, cap, "-");
        return;
    }
    for (uint32_t i = 0; i < n && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%u", i ? "," : "", v[i]);
        if (w < 0)
            return;
        used += (size_t)w;
    }
}

static void write_records(FILE *f, const struct sim_state *st)
{
    char spans[MAX_PLACEMENTS * 24], order[MAX_PLACEMENTS * 12];
    fputs("# migkit simulated NVML node; format: docs/simulator-state-format.md. "
          "Edit only holding <file>.lock.\n",
          f);
    fputs("migkit-sim version=1\n", f);
    fprintf(f, "driver version=%s cuda=%s\n", st->driver, st->cuda);
    for (uint32_t g = 0; g < st->ngpus; g++) {
        const struct sim_gpu *gpu = &st->gpus[g];
        fprintf(f,
                "gpu index=%u uuid=%s bus=%s pci=0x%08X subsys=0x%08X memory=%llu arch=%u "
                "mig_capable=%u mode=%u pending=%u max_mig=%u minor=%u name=%s\n",
                gpu->index, gpu->uuid, gpu->bus, gpu->pci, gpu->subsys,
                (unsigned long long)gpu->memory, gpu->arch, gpu->mig_capable, gpu->mode,
                gpu->pending, gpu->max_mig, gpu->minor, gpu->name);
    }
    for (uint32_t g = 0; g < st->ngpus; g++) {
        const struct sim_gpu *gpu = &st->gpus[g];
        for (uint32_t p = 0; p < gpu->ngips; p++) {
            const struct sim_gip *gip = &gpu->gips[p];
            format_spans(spans, sizeof spans, gip->placements, gip->nplacements);
            format_list(order, sizeof order, gip->order, gip->norder);
            fprintf(f,
                    "gip gpu=%u index=0x%X id=%u slices=%u mslices=%u instances=%u memory=%llu "
                    "devmem=%llu sm=%u ce=%u dec=%u enc=%u jpeg=%u ofa=%u p2p=%u caps=%u "
                    "placements=%s order=%s name=%s\n",
                    g, gip->index, gip->id, gip->slices, gip->mslices, gip->instances,
                    (unsigned long long)gip->memory, (unsigned long long)gip->devmem, gip->sm,
                    gip->ce, gip->dec, gip->enc, gip->jpeg, gip->ofa, gip->p2p, gip->caps, spans,
                    order, gip->name);
            for (uint32_t c = 0; c < gip->ncips; c++) {
                const struct sim_cip *cip = &gip->cips[c];
                format_spans(spans, sizeof spans, cip->placements, cip->nplacements);
                fprintf(f,
                        "cip gpu=%u gip=%u index=0x%X id=%u slices=%u instances=%u sm=%u ce=%u "
                        "dec=%u enc=%u jpeg=%u ofa=%u caps=%u placements=%s name=%s\n",
                        g, gip->id, cip->index, cip->id, cip->slices, cip->instances, cip->sm,
                        cip->ce, cip->dec, cip->enc, cip->jpeg, cip->ofa, cip->caps, spans,
                        cip->name);
            }
        }
    }
    for (uint32_t g = 0; g < st->ngpus; g++) {
        const struct sim_gpu *gpu = &st->gpus[g];
        for (uint32_t id = 0; id < MAX_GIS; id++) {
            const struct sim_gi *gi = &gpu->gis[id];
            if (!gi->live)
                continue;
            fprintf(f, "gi gpu=%u id=%u profile=%u start=%u size=%u busy=%llu\n", g, id,
                    gi->profile, gi->start, gi->size, (unsigned long long)gi->busy);
            for (uint32_t c = 0; c < MAX_CIS; c++) {
                const struct sim_ci *ci = &gi->cis[c];
                if (ci->live)
                    fprintf(f, "ci gpu=%u gi=%u id=%u profile=%u start=%u size=%u busy=%llu\n", g,
                            id, c, ci->profile, ci->start, ci->size, (unsigned long long)ci->busy);
            }
        }
    }
    for (uint32_t i = 0; i < st->ncalls; i++) {
        if (i % 6 == 0)
            fputs(i ? "\ncalls" : "calls", f);
        fprintf(f, " %s=%llu", st->calls[i].name, (unsigned long long)st->calls[i].count);
    }
    if (st->ncalls)
        fputc('\n', f);
}

/* Write g_cur through <state>.tmp.<pid> + rename; the caller holds the lock. */
static int write_state_file(void)
{
    char tmp[PATH_LEN + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", g_path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    write_records(f, g_cur);
    /* File timestamps tick coarsely (a few ms) and a freed inode is soon reused, so two
     * writes close together could leave (inode, size, mtime) unchanged and readers would miss
     * the second. Every writer therefore makes the mtime strictly larger than the last one. */
    struct timespec times[2];
    int ok = fflush(f) == 0 && !ferror(f) && clock_gettime(CLOCK_REALTIME, &times[1]) == 0;
    if (ok && g_sig.valid &&
        (times[1].tv_sec < g_sig.mtime.tv_sec ||
         (times[1].tv_sec == g_sig.mtime.tv_sec && times[1].tv_nsec <= g_sig.mtime.tv_nsec))) {
        times[1] = g_sig.mtime;
        if (++times[1].tv_nsec >= 1000000000L) {
            times[1].tv_nsec = 0;
            times[1].tv_sec++;
        }
    }
    times[0] = times[1];
    struct stat sb;
    ok = ok && futimens(fileno(f), times) == 0 && fstat(fileno(f), &sb) == 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, g_path) != 0) {
        sim_debug("cannot write %s", g_path);
        unlink(tmp);
        return -1;
    }
    sig_from_stat(&sb, &g_sig);
    return 0;
}

static int lock_file(void)
{
    if (g_lock_fd < 0) {
        g_lock_fd = open(g_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (g_lock_fd < 0)
            return -1;
    }
    while (flock(g_lock_fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

static void unlock_file(void)
{
    if (g_lock_fd >= 0 && flock(g_lock_fd, LOCK_UN) != 0)
        sim_debug("cannot unlock %s", g_lock_path);
}

static void close_lock_file(void)
{
    if (g_lock_fd >= 0 && close(g_lock_fd) != 0)
        sim_debug("cannot close %s", g_lock_path);
    g_lock_fd = -1;
}

/* Move this process's call counts into the state that is about to be written. */
static void merge_counts(void)
{
    for (int fn = 0; fn < FN_COUNT; fn++) {
        uint64_t n = __atomic_exchange_n(&g_unflushed[fn], 0, __ATOMIC_RELAXED);
        if (n && add_call_count(g_cur, g_fn_names[fn], strlen(g_fn_names[fn]), n) != 0)
            sim_debug("call table full; dropping %s", g_fn_names[fn]);
    }
}

static int have_unflushed(void)
{
    for (int fn = 0; fn < FN_COUNT; fn++)
        if (__atomic_load_n(&g_unflushed[fn], __ATOMIC_RELAXED))
            return 1;
    return 0;
}

/* Shutdown / exit: merge pending counts into the file, if the node still exists. */
static void flush_counts(void)
{
    struct stat sb;
    if (g_path[0] == '\0' || !have_unflushed() || stat(g_path, &sb) != 0)
        return;
    if (lock_file() != 0)
        return;
    if (refresh() == 0) {
        merge_counts();
        if (write_state_file() != 0)
            sim_debug("cannot flush call counts");
    }
    unlock_file();
}

/* ------------------------------------------------------------------ faults and latency */

static int parse_error_name(const char *s, size_t len, enum sim_rc *rc)
{
    uint64_t v;
    if (parse_u64(s, len, &v) == 0) {
        *rc = (enum sim_rc)v;
        return v <= 0xffffffffULL ? 0 : -1;
    }
    if (len > 11 && strncasecmp(s, "NVML_ERROR_", 11) == 0) {
        s += 11;
        len -= 11;
    } else if (len > 5 && strncasecmp(s, "NVML_", 5) == 0) {
        s += 5;
        len -= 5;
    }
    for (size_t i = 0; i < sizeof g_rc_table / sizeof g_rc_table[0]; i++) {
        if (strlen(g_rc_table[i].name) == len && strncasecmp(g_rc_table[i].name, s, len) == 0) {
            *rc = g_rc_table[i].rc;
            return 0;
        }
    }
    return -1;
}

/* MIGKIT_SIM_FAULTS = FUNCTION@N=ERROR[,FUNCTION@N=ERROR...] */
static int parse_faults(const char *spec)
{
    g_nfaults = 0;
    memset(g_fault_fn, 0, sizeof g_fault_fn);
    if (spec == NULL)
        return 0;
    const char *p = spec, *end = spec + strlen(spec);
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        while (p < item_end && *p == ' ')
            p++;
        if (p < item_end) {
            const char *at = memchr(p, '@', (size_t)(item_end - p));
            const char *eq = at ? memchr(at, '=', (size_t)(item_end - at)) : NULL;
            uint64_t nth;
            enum sim_rc rc;
            if (eq == NULL || g_nfaults == MAX_FAULTS ||
                parse_u64(at + 1, (size_t)(eq - at - 1), &nth) != 0 || nth == 0 ||
                parse_error_name(eq + 1, (size_t)(item_end - eq - 1), &rc) != 0)
                return -1;
            int fn = 0;
            while (fn < FN_COUNT && !(strlen(g_fn_names[fn]) == (size_t)(at - p) &&
                                      memcmp(g_fn_names[fn], p, (size_t)(at - p)) == 0))
                fn++;
            if (fn == FN_COUNT)
                return -1;
            g_faults[g_nfaults].fn = (enum sim_fn)fn;
            g_faults[g_nfaults].nth = nth;
            g_faults[g_nfaults].rc = rc;
            g_nfaults++;
            g_fault_fn[fn] = 1;
        }
        p = comma ? comma + 1 : end;
    }
    return 0;
}

static int parse_latency(const char *s)
{
    g_latency.tv_sec = 0;
    g_latency.tv_nsec = 0;
    if (s == NULL || *s == '\0')
        return 0;
    char *endp;
    errno = 0;
    double ms = strtod(s, &endp);
    if (errno != 0 || *endp != '\0' || !(ms >= 0.0) || ms > 3600e3)
        return -1;
    long long ns = (long long)(ms * 1e6);
    g_latency.tv_sec = (time_t)(ns / 1000000000LL);
    g_latency.tv_nsec = (long)(ns % 1000000000LL);
    return 0;
}

static void sleep_latency(void)
{
    struct timespec left = g_latency;
    if (left.tv_sec == 0 && left.tv_nsec == 0)
        return;
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------ entering a call */

static void lock_state(void)
{
    int rc = pthread_mutex_lock(&g_mutex);
    if (rc != 0)
        sim_debug("pthread_mutex_lock: %s", strerror(rc));
}

static void unlock_state(void)
{
    int rc = pthread_mutex_unlock(&g_mutex);
    if (rc != 0)
        sim_debug("pthread_mutex_unlock: %s", strerror(rc));
}

static int initialized(void)
{
    return __atomic_load_n(&g_init_count, __ATOMIC_ACQUIRE) != 0;
}

/* Count a call and apply an injected fault. Before init no node is open: nothing is counted. */
static enum sim_rc count_call(enum sim_fn fn)
{
    __atomic_fetch_add(&g_unflushed[fn], 1, __ATOMIC_RELAXED);
    uint64_t nth = __atomic_add_fetch(&g_since_init[fn], 1, __ATOMIC_RELAXED);
    if (g_fault_fn[fn])
        for (uint32_t i = 0; i < g_nfaults; i++)
            if (g_faults[i].fn == fn && g_faults[i].nth == nth)
                return g_faults[i].rc;
    return RC_SUCCESS;
}

static enum sim_rc enter(enum sim_fn fn)
{
    if (!initialized())
        return RC_UNINITIALIZED;
    return count_call(fn);
}

/* Mutating calls sleep MIGKIT_SIM_LATENCY_MS first, holding no lock, so threads overlap. */
static enum sim_rc enter_mutating(enum sim_fn fn)
{
    if (!initialized())
        return RC_UNINITIALIZED;
    sleep_latency();
    return count_call(fn);
}

#define ENTER(fn)                                                                              \
    do {                                                                                       \
        enum sim_rc enter_rc_ = enter(FN_##fn);                                                \
        if (enter_rc_ != RC_SUCCESS)                                                           \
            return enter_rc_;                                                                  \
    } while (0)

#define ENTER_MUTATING(fn)                                                                     \
    do {                                                                                       \
        enum sim_rc enter_rc_ = enter_mutating(FN_##fn);                                       \
        if (enter_rc_ != RC_SUCCESS)                                                           \
            return enter_rc_;                                                                  \
    } while (0)

/* Read-only section: the mutex, and a freshness check at most once per ms. */
static enum sim_rc read_begin(void)
{
    lock_state();
    if (g_init_count == 0) {
        unlock_state();
        return RC_UNINITIALIZED;
    }
    refresh_for_read();
    return RC_SUCCESS;
}

static enum sim_rc read_end(enum sim_rc rc)
{
    unlock_state();
    return rc;
}

/* Mutating section: the mutex, the file lock, and always an up-to-date state. */
static enum sim_rc write_begin(void)
{
    lock_state();
    if (g_init_count == 0) {
        unlock_state();
        return RC_UNINITIALIZED;
    }
    if (lock_file() != 0) {
        unlock_state();
        return RC_UNKNOWN;
    }
    if (refresh() != 0) {
        unlock_file();
        unlock_state();
        return RC_UNKNOWN;
    }
    return RC_SUCCESS;
}

/* Write the state (and the call counts, also after a refused request), then unlock. */
static enum sim_rc write_end(enum sim_rc rc)
{
    merge_counts();
    if (write_state_file() != 0) {
        rc = RC_UNKNOWN;
        if (reload() != 0) /* drop the change that could not be stored */
            sim_debug("cannot reload %s", g_path);
    }
    unlock_file();
    unlock_state();
    return rc;
}

/* ------------------------------------------------------------------ resolving handles */

struct mig_ref {
    struct sim_gpu *gpu;
    struct sim_gi *gi;
    struct sim_ci *ci;
    uint32_t gi_id, ci_id;
};

/* Slot number of p in a table of `count` elements of `size` bytes, or -1. */
static long slot_of(const void *p, const void *table, size_t size, size_t count)
{
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)table;
    if (a < base || a >= base + size * count || (a - base) % size != 0)
        return -1;
    return (long)((a - base) / size);
}

static struct sim_gpu *gpu_of(const struct sim_device *h)
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

static int ci_of(const struct sim_compute_instance *h, struct mig_ref *ref)
{
    long i = slot_of(h, g_ci_slots, sizeof g_ci_slots[0], CI_SLOTS);
    return i < 0 ? -1 : ci_slot_lookup(i, ref);
}

static struct sim_gi *gi_of(const struct sim_gpu_instance *h, struct sim_gpu **gpu_out,
                            uint32_t *id_out)
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

enum device_kind { DEV_BAD, DEV_GPU, DEV_MIG };

static enum device_kind resolve_device(const struct sim_device *h, struct sim_gpu **gpu,
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

static sim_device_t gpu_handle(const struct sim_gpu *gpu)
{
    return &g_gpu_handles[gpu->index];
}

static sim_device_t mig_handle(const struct sim_ci *ci)
{
    return &g_mig_handles[ci->slot];
}

/* ------------------------------------------------------------------ init and shutdown */

static enum sim_rc open_node(void)
{
    const char *path = getenv("MIGKIT_SIM_STATE");
    const char *debug = getenv("MIGKIT_SIM_DEBUG");
    g_debug = debug != NULL && strcmp(debug, "1") == 0;
    if (path == NULL || path[0] == '\0' || strlen(path) >= PATH_LEN) {
        sim_debug("MIGKIT_SIM_STATE is not set");
        return RC_DRIVER_NOT_LOADED;
    }
    if (parse_faults(getenv("MIGKIT_SIM_FAULTS")) != 0) {
        sim_debug("bad MIGKIT_SIM_FAULTS");
        return RC_UNKNOWN;
    }
    if (parse_latency(getenv("MIGKIT_SIM_LATENCY_MS")) != 0) {
        sim_debug("bad MIGKIT_SIM_LATENCY_MS");
        return RC_UNKNOWN;
    }
    if (strcmp(path, g_path) != 0) {
        close_lock_file();
        copy_string(g_path, sizeof g_path, path);
        snprintf(g_lock_path, sizeof g_lock_path, "%s.lock", g_path);
        g_sig.valid = 0;
    }
    if (reload() != 0)
        return RC_DRIVER_NOT_LOADED;
    for (uint32_t i = 0; i < MAX_GPUS; i++) {
        g_gpu_handles[i].magic = DEVICE_MAGIC;
        g_gpu_handles[i].gpu = i;
    }
    if (clock_gettime(CLOCK_MONOTONIC, &g_last_check) != 0)
        memset(&g_last_check, 0, sizeof g_last_check);
    memset(g_since_init, 0, sizeof g_since_init);
    return RC_SUCCESS;
}

static enum sim_rc init_common(enum sim_fn fn)
{
    lock_state();
    if (g_init_count == 0) {
        enum sim_rc rc = open_node();
        if (rc != RC_SUCCESS) {
            unlock_state();
            return rc;
        }
    }
    enum sim_rc rc = count_call(fn);
    if (rc == RC_SUCCESS)
        __atomic_store_n(&g_init_count, g_init_count + 1, __ATOMIC_RELEASE);
    unlock_state();
    return rc;
}

SIM_EXPORT enum sim_rc nvmlInit(void)
{
    return init_common(FN_nvmlInit);
}

SIM_EXPORT enum sim_rc nvmlInit_v2(void)
{
    return init_common(FN_nvmlInit_v2);
}

SIM_EXPORT enum sim_rc nvmlInitWithFlags(unsigned int flags)
{
    (void)flags; /* NO_GPUS / NO_ATTACH / FORCE_INIT change nothing for a simulated node */
    return init_common(FN_nvmlInitWithFlags);
}

SIM_EXPORT enum sim_rc nvmlShutdown(void)
{
    lock_state();
    if (g_init_count == 0) { /* more shutdowns than inits is not an error (§1) */
        unlock_state();
        return RC_SUCCESS;
    }
    enum sim_rc rc = count_call(FN_nvmlShutdown);
    if (rc == RC_SUCCESS) {
        __atomic_store_n(&g_init_count, g_init_count - 1, __ATOMIC_RELEASE);
        if (g_init_count == 0)
            flush_counts();
    }
    unlock_state();
    return rc;
}

static void atfork_prepare(void)
{
    lock_state();
}

static void atfork_parent(void)
{
    unlock_state();
}

/* The child's counts belong to the parent, and it must not share the parent's flock. */
static void atfork_child(void)
{
    memset(g_unflushed, 0, sizeof g_unflushed);
    close_lock_file();
    unlock_state();
}

__attribute__((constructor)) static void sim_load(void)
{
    if (pthread_atfork(atfork_prepare, atfork_parent, atfork_child) != 0)
        sim_debug("pthread_atfork failed");
}

/* Counts not yet in the file (no nvmlShutdown before exit) are merged at process exit. */
__attribute__((destructor)) static void sim_unload(void)
{
    if (pthread_mutex_trylock(&g_mutex) != 0)
        return;
    flush_counts();
    close_lock_file();
    unlock_state();
}

/* ------------------------------------------------------------------ errors and system */

SIM_EXPORT const char *nvmlErrorString(enum sim_rc result)
{
    if (initialized())
        (void)count_call(FN_nvmlErrorString); /* a string is returned; faults do not apply */
    for (size_t i = 0; i < sizeof g_rc_table / sizeof g_rc_table[0]; i++)
        if (g_rc_table[i].rc == result)
            return g_rc_table[i].text;
    return "Unknown Error";
}

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
    if (clock_gettime(CLOCK_MONOTONIC, &g_last_check) != 0)
        memset(&g_last_check, 0, sizeof g_last_check);
    if (refresh() != 0)
        sim_debug("keeping the last good state of %s", g_path);
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
    ENTER(nvmlDeviceGetPciInfo);
    return pci_info(device, pci);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetPciInfo_v2(sim_device_t device, struct sim_pci_info *pci)
{
    ENTER(nvmlDeviceGetPciInfo_v2);
    return pci_info(device, pci);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetPciInfo_v3(sim_device_t device, struct sim_pci_info *pci)
{
    ENTER(nvmlDeviceGetPciInfo_v3);
    return pci_info(device, pci);
}

/* Minor number and index belong to physical GPUs only. */
static enum sim_rc gpu_number(sim_device_t device, unsigned int *out, int minor)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    if (out == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_GPU:
        *out = minor ? gpu->minor : gpu->index;
        return read_end(RC_SUCCESS);
    case DEV_MIG:
        return read_end(RC_NOT_SUPPORTED);
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
}

SIM_EXPORT enum sim_rc nvmlDeviceGetMinorNumber(sim_device_t device, unsigned int *minor)
{
    ENTER(nvmlDeviceGetMinorNumber);
    return gpu_number(device, minor, 1);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetIndex(sim_device_t device, unsigned int *index)
{
    ENTER(nvmlDeviceGetIndex);
    return gpu_number(device, index, 0);
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
    ENTER(nvmlDeviceGetName);
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
    ENTER(nvmlDeviceGetUUID);
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
    ENTER(nvmlDeviceGetArchitecture);
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
    ENTER(nvmlDeviceGetMemoryInfo);
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
    ENTER(nvmlDeviceGetMemoryInfo_v2);
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

/* MIG device handles only (§2.1): SMs from the CI profile, the rest from the GI profile. */
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
    ENTER(nvmlDeviceGetAttributes);
    return attributes(device, attr);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetAttributes_v2(sim_device_t device,
                                                  struct sim_attributes *attr)
{
    ENTER(nvmlDeviceGetAttributes_v2);
    return attributes(device, attr);
}

/* ------------------------------------------------------------------ MIG mode */

/* A physical, MIG-capable GPU; MIG device handles are not accepted here. */
static enum sim_rc mig_gpu(sim_device_t device, struct sim_gpu **gpu)
{
    *gpu = gpu_of(device);
    if (*gpu == NULL)
        return RC_INVALID_ARGUMENT;
    return (*gpu)->mig_capable ? RC_SUCCESS : RC_NOT_SUPPORTED;
}

/* As mig_gpu, and MIG currently enabled: GI-level calls are NOT_SUPPORTED otherwise (§5). */
static enum sim_rc mig_enabled_gpu(sim_device_t device, struct sim_gpu **gpu)
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
    ENTER_MUTATING(nvmlDeviceSetMigMode);
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
    ENTER(nvmlDeviceGetMigMode);
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

/* ------------------------------------------------------------------ GI profiles */

/* Profile info works with MIG off (§5); an index past the table is INVALID_ARGUMENT. */
static enum sim_rc gip_by_index(sim_device_t device, unsigned int index, struct sim_gip **gip)
{
    struct sim_gpu *gpu = gpu_of(device);
    if (gpu == NULL || index >= GIP_INDEX_COUNT)
        return RC_INVALID_ARGUMENT;
    if (!gpu->mig_capable || (*gip = find_gip_by_index(gpu, index)) == NULL)
        return RC_NOT_SUPPORTED;
    return RC_SUCCESS;
}

static enum sim_rc gip_by_id(sim_device_t device, unsigned int id, struct sim_gip **gip)
{
    struct sim_gpu *gpu;
    enum sim_rc rc = mig_gpu(device, &gpu);
    if (rc == RC_SUCCESS && (*gip = find_gip_by_id(gpu, id)) == NULL)
        rc = RC_NOT_SUPPORTED;
    return rc;
}

static void fill_gip_v1(const struct sim_gip *gip, struct sim_gip_info_v1 *info)
{
    info->id = gip->id;
    info->p2p = gip->p2p;
    info->slices = gip->slices;
    info->instances = gip->instances;
    info->sm = gip->sm;
    info->ce = gip->ce;
    info->dec = gip->dec;
    info->enc = gip->enc;
    info->jpeg = gip->jpeg;
    info->ofa = gip->ofa;
    info->memory_mib = gip->memory;
}

/* v2 or v3, as the caller's version word says; anything else is INVALID_ARGUMENT. */
static enum sim_rc fill_gip_versioned(const struct sim_gip *gip, void *out)
{
    unsigned int version;
    memcpy(&version, out, sizeof version);
    if (version == GIP_INFO_V2) {
        struct sim_gip_info_v2 *info = out;
        memset(info, 0, sizeof *info);
        info->version = version;
        info->id = gip->id;
        info->p2p = gip->p2p;
        info->slices = gip->slices;
        info->instances = gip->instances;
        info->sm = gip->sm;
        info->ce = gip->ce;
        info->dec = gip->dec;
        info->enc = gip->enc;
        info->jpeg = gip->jpeg;
        info->ofa = gip->ofa;
        info->memory_mib = gip->memory;
        copy_string(info->name, sizeof info->name, gip->name);
        return RC_SUCCESS;
    }
    if (version == GIP_INFO_V3) {
        struct sim_gip_info_v3 *info = out;
        memset(info, 0, sizeof *info);
        info->version = version;
        info->id = gip->id;
        info->slices = gip->slices;
        info->instances = gip->instances;
        info->sm = gip->sm;
        info->ce = gip->ce;
        info->dec = gip->dec;
        info->enc = gip->enc;
        info->jpeg = gip->jpeg;
        info->ofa = gip->ofa;
        info->memory_mib = gip->memory;
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
    ENTER(nvmlDeviceGetGpuInstanceProfileInfo);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_index(device, profile, &gip);
    if (rc == RC_SUCCESS)
        fill_gip_v1(gip, info);
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceProfileInfoV(sim_device_t device,
                                                            unsigned int profile, void *info)
{
    struct sim_gip *gip;
    ENTER(nvmlDeviceGetGpuInstanceProfileInfoV);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_index(device, profile, &gip);
    if (rc == RC_SUCCESS)
        rc = fill_gip_versioned(gip, info);
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceProfileInfoByIdV(sim_device_t device,
                                                                unsigned int profile_id,
                                                                void *info)
{
    struct sim_gip *gip;
    ENTER(nvmlDeviceGetGpuInstanceProfileInfoByIdV);
    if (info == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = gip_by_id(device, profile_id, &gip);
    if (rc == RC_SUCCESS)
        rc = fill_gip_versioned(gip, info);
    return read_end(rc);
}

/*
 * Every placement of the profile, whatever MIG mode and occupancy. NULL array: the count
 * only. An array smaller than *count needs: INSUFFICIENT_SIZE with *count = the number needed
 * (undocumented on hardware; §11.4 calls it the natural code).
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
    rc = gip_by_id(device, profile_id, &gip);
    if (rc == RC_SUCCESS)
        rc = copy_placements(gip->placements, gip->nplacements, placements, count);
    return read_end(rc);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstancePossiblePlacements(
    sim_device_t device, unsigned int profile_id, struct sim_placement *placements,
    unsigned int *count)
{
    ENTER(nvmlDeviceGetGpuInstancePossiblePlacements);
    return gi_placements(device, profile_id, placements, count);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    sim_device_t device, unsigned int profile_id, struct sim_placement *placements,
    unsigned int *count)
{
    ENTER(nvmlDeviceGetGpuInstancePossiblePlacements_v2);
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

/* §6.6: free placements, capped by instanceCount minus existing GIs, 0 on an ALL_ME clash. */
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
    ENTER(nvmlDeviceGetGpuInstanceRemainingCapacity);
    if (count == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_enabled_gpu(device, &gpu);
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

static sim_gpu_instance_t gi_handle(const struct sim_gi *gi)
{
    return &g_gi_slots[gi->slot];
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
    ENTER_MUTATING(nvmlDeviceCreateGpuInstance);
    if (gpu_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_gi_call(device, profile_id, NULL, gpu_instance);
}

SIM_EXPORT enum sim_rc nvmlDeviceCreateGpuInstanceWithPlacement(
    sim_device_t device, unsigned int profile_id, const struct sim_placement *placement,
    sim_gpu_instance_t *gpu_instance)
{
    ENTER_MUTATING(nvmlDeviceCreateGpuInstanceWithPlacement);
    if (placement == NULL || gpu_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_gi_call(device, profile_id, placement, gpu_instance);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceDestroy(sim_gpu_instance_t gpu_instance)
{
    struct sim_gpu *gpu;
    uint32_t id;
    ENTER_MUTATING(nvmlGpuInstanceDestroy);
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
    ENTER(nvmlDeviceGetGpuInstances);
    if (gpu_instances == NULL || count == NULL) /* NULL array: INVALID_ARGUMENT (§6.8) */
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_enabled_gpu(device, &gpu);
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
    ENTER(nvmlDeviceGetGpuInstanceById);
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
    ENTER(nvmlGpuInstanceGetInfo);
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
    ENTER(nvmlGpuInstanceGetComputeInstanceProfileInfo);
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
    ENTER(nvmlGpuInstanceGetComputeInstanceProfileInfoV);
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
    ENTER(nvmlGpuInstanceGetComputeInstanceRemainingCapacity);
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
    ENTER(nvmlGpuInstanceGetComputeInstancePossiblePlacements);
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

static sim_compute_instance_t ci_handle(const struct sim_ci *ci)
{
    return &g_ci_slots[ci->slot];
}

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
    uint32_t id = 0; /* CI ids: the lowest free one (§6.7) */
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
    ENTER_MUTATING(nvmlGpuInstanceCreateComputeInstance);
    if (compute_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_ci_call(gpu_instance, profile_id, NULL, compute_instance);
}

SIM_EXPORT enum sim_rc nvmlGpuInstanceCreateComputeInstanceWithPlacement(
    sim_gpu_instance_t gpu_instance, unsigned int profile_id,
    const struct sim_placement *placement, sim_compute_instance_t *compute_instance)
{
    ENTER_MUTATING(nvmlGpuInstanceCreateComputeInstanceWithPlacement);
    if (placement == NULL || compute_instance == NULL)
        return RC_INVALID_ARGUMENT;
    return create_ci_call(gpu_instance, profile_id, placement, compute_instance);
}

SIM_EXPORT enum sim_rc nvmlComputeInstanceDestroy(sim_compute_instance_t compute_instance)
{
    struct mig_ref ref;
    ENTER_MUTATING(nvmlComputeInstanceDestroy);
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
    ENTER(nvmlGpuInstanceGetComputeInstances);
    if (compute_instances == NULL || count == NULL) /* NULL array: INVALID_ARGUMENT (§6.8) */
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
    ENTER(nvmlGpuInstanceGetComputeInstanceById);
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
 * device's UUID. The fact sheet leaves this unresolved (§6.10); we follow the DRA driver.
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
    ENTER(nvmlComputeInstanceGetInfo);
    return ci_info(compute_instance, info);
}

SIM_EXPORT enum sim_rc nvmlComputeInstanceGetInfo_v2(sim_compute_instance_t compute_instance,
                                                     struct sim_ci_info *info)
{
    ENTER(nvmlComputeInstanceGetInfo_v2);
    return ci_info(compute_instance, info);
}

/* ------------------------------------------------------------------ MIG device handles */

SIM_EXPORT enum sim_rc nvmlDeviceIsMigDeviceHandle(sim_device_t device, unsigned int *is_mig)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    ENTER(nvmlDeviceIsMigDeviceHandle);
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

/* GI or CI id of a MIG device; NOT_SUPPORTED for a physical GPU's handle. */
static enum sim_rc mig_instance_id(sim_device_t device, unsigned int *id, int want_ci)
{
    struct sim_gpu *gpu;
    struct mig_ref mig;
    if (id == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    switch (resolve_device(device, &gpu, &mig)) {
    case DEV_MIG:
        *id = want_ci ? mig.ci_id : mig.gi_id;
        return read_end(RC_SUCCESS);
    case DEV_GPU:
        return read_end(RC_NOT_SUPPORTED);
    default:
        return read_end(RC_INVALID_ARGUMENT);
    }
}

SIM_EXPORT enum sim_rc nvmlDeviceGetGpuInstanceId(sim_device_t device, unsigned int *id)
{
    ENTER(nvmlDeviceGetGpuInstanceId);
    return mig_instance_id(device, id, 0);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeInstanceId(sim_device_t device, unsigned int *id)
{
    ENTER(nvmlDeviceGetComputeInstanceId);
    return mig_instance_id(device, id, 1);
}

/* SUCCESS with 0 when MIG is unsupported or off (§2.6). */
SIM_EXPORT enum sim_rc nvmlDeviceGetMaxMigDeviceCount(sim_device_t device, unsigned int *count)
{
    ENTER(nvmlDeviceGetMaxMigDeviceCount);
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

/* MIG devices in ascending GI id, then CI id (§6.7). */
SIM_EXPORT enum sim_rc nvmlDeviceGetMigDeviceHandleByIndex(sim_device_t device,
                                                           unsigned int index,
                                                           sim_device_t *mig_device)
{
    struct sim_gpu *gpu;
    ENTER(nvmlDeviceGetMigDeviceHandleByIndex);
    if (mig_device == NULL)
        return RC_INVALID_ARGUMENT;
    enum sim_rc rc = read_begin();
    if (rc != RC_SUCCESS)
        return rc;
    rc = mig_enabled_gpu(device, &gpu);
    if (rc != RC_SUCCESS)
        return read_end(rc);
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
    ENTER(nvmlDeviceGetDeviceHandleFromMigDeviceHandle);
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
    ENTER(nvmlDeviceGetComputeRunningProcesses);
    return running_processes(device, count, infos, 0);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeRunningProcesses_v2(sim_device_t device,
                                                               unsigned int *count,
                                                               struct sim_process_info_v2 *infos)
{
    ENTER(nvmlDeviceGetComputeRunningProcesses_v2);
    return running_processes(device, count, infos, 1);
}

SIM_EXPORT enum sim_rc nvmlDeviceGetComputeRunningProcesses_v3(sim_device_t device,
                                                               unsigned int *count,
                                                               struct sim_process_info_v2 *infos)
{
    ENTER(nvmlDeviceGetComputeRunningProcesses_v3);
    return running_processes(device, count, infos, 1);
}
