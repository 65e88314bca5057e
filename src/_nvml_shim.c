/*
 * migkit's NVML shim (see _nvml_shim.h for the API and the status conventions).
 *
 * The NVML declarations below are migkit's own, written from the struct layouts of NVIDIA's
 * published nvml.h; static assertions pin every size and offset we rely on.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_nvml_shim.h"

/* ------------------------------------------------------------------------------------------ */
/* NVML ABI (x86_64 / aarch64 Linux, LP64)                                                     */

typedef int nv_return_t; /* a 4-byte enum in NVML */

/* NV_SUCCESS, NV_NOT_FOUND, ...: every NVML return code, from the one list in the header. */
enum {
#define SHIM_CODE_ENUM(code, name, text) NV_##name = code,
    SHIM_NVML_RETURN_CODES(SHIM_CODE_ENUM)
#undef SHIM_CODE_ENUM
};

enum {
    NV_GI_PROFILE_INDEX_COUNT = 0x12,
    NV_CI_PROFILE_INDEX_COUNT = 0x9,
    NV_CI_ENGINE_PROFILE_SHARED = 0x0,
};

/* A versioned struct's version word is its size OR'ed with the version shifted left by 24. */
#define NV_STRUCT_VERSION(type, v) ((unsigned int)(sizeof(type) | ((unsigned int)(v) << 24)))

typedef struct nv_device_opaque *nv_device_t; /* physical GPU or MIG device */
typedef struct nv_gi_opaque *nv_gi_t;
typedef struct nv_ci_opaque *nv_ci_t;

typedef struct {
    char bus_id_legacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pci_device_id;
    unsigned int pci_subsystem_id;
    char bus_id[32];
} nv_pci_info_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nv_memory_t;

typedef struct {
    unsigned int id;
    unsigned int p2p;
    unsigned int slice_count;
    unsigned int instance_count;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned long long memory_mib;
} nv_gi_profile_v1_t;

typedef struct {
    unsigned int version;
    unsigned int id;
    unsigned int p2p;
    unsigned int slice_count;
    unsigned int instance_count;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned long long memory_mib;
    char name[96];
} nv_gi_profile_v2_t;

/* v3 drops the p2p word, so everything after `id` moves 4 bytes down; the size stays 152. */
typedef struct {
    unsigned int version;
    unsigned int id;
    unsigned int slice_count;
    unsigned int instance_count;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned long long memory_mib;
    char name[96];
    unsigned int capabilities;
} nv_gi_profile_v3_t;

typedef struct {
    unsigned int start;
    unsigned int size;
} nv_placement_t; /* GI placements (memory slices) and CI placements (compute slices) alike */

typedef struct {
    nv_device_t device;
    unsigned int id;
    unsigned int profile_id;
    nv_placement_t placement;
} nv_gi_info_t;

typedef struct {
    unsigned int version;
    unsigned int id;
    unsigned int slice_count;
    unsigned int instance_count;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    char name[96];
} nv_ci_profile_v2_t;

typedef struct {
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned int gi_slice_count;
    unsigned int ci_slice_count;
    unsigned long long memory_mib;
} nv_attributes_t;

typedef struct {
    nv_device_t device;
    nv_gi_t gpu_instance;
    unsigned int id;
    unsigned int profile_id;
    nv_placement_t placement;
} nv_ci_info_t;

/* nvmlProcessInfo_v2_t, which the _v2 and _v3 process queries fill. */
typedef struct {
    unsigned int pid;
    unsigned long long used_memory;
    unsigned int gpu_instance_id;
    unsigned int compute_instance_id;
} nv_process_info_t;

_Static_assert(sizeof(nv_pci_info_t) == 68, "PCI info is 68 bytes");
_Static_assert(offsetof(nv_pci_info_t, pci_device_id) == 28, "pciDeviceId at 28");
_Static_assert(offsetof(nv_pci_info_t, bus_id) == 36, "busId at 36");
_Static_assert(sizeof(nv_memory_t) == 24, "memory v1 is 24 bytes");
_Static_assert(sizeof(nv_gi_profile_v1_t) == 48, "GI profile v1 is 48 bytes");
_Static_assert(offsetof(nv_gi_profile_v1_t, memory_mib) == 40, "v1 memorySizeMB at 40");
_Static_assert(sizeof(nv_gi_profile_v2_t) == 152, "GI profile v2 is 152 bytes");
_Static_assert(offsetof(nv_gi_profile_v2_t, memory_mib) == 48, "v2 memorySizeMB at 48");
_Static_assert(offsetof(nv_gi_profile_v2_t, name) == 56, "v2 name at 56");
_Static_assert(sizeof(nv_gi_profile_v3_t) == 152, "GI profile v3 is 152 bytes");
_Static_assert(offsetof(nv_gi_profile_v3_t, memory_mib) == 40, "v3 memorySizeMB at 40");
_Static_assert(offsetof(nv_gi_profile_v3_t, name) == 48, "v3 name at 48");
_Static_assert(offsetof(nv_gi_profile_v3_t, capabilities) == 144, "v3 capabilities at 144");
_Static_assert(sizeof(nv_placement_t) == 8, "placement is 8 bytes");
_Static_assert(sizeof(nv_gi_info_t) == 24, "GI info is 24 bytes");
_Static_assert(offsetof(nv_gi_info_t, placement) == 16, "GI info placement at 16");
_Static_assert(sizeof(nv_ci_profile_v2_t) == 136, "CI profile v2 is 136 bytes");
_Static_assert(offsetof(nv_ci_profile_v2_t, name) == 40, "CI profile v2 name at 40");
_Static_assert(sizeof(nv_attributes_t) == 40, "attributes are 40 bytes");
_Static_assert(offsetof(nv_attributes_t, memory_mib) == 32, "attributes memorySizeMB at 32");
_Static_assert(sizeof(nv_ci_info_t) == 32, "CI info is 32 bytes");
_Static_assert(offsetof(nv_ci_info_t, id) == 16, "CI info id at 16");
_Static_assert(offsetof(nv_ci_info_t, placement) == 24, "CI info placement at 24");
_Static_assert(sizeof(nv_process_info_t) == 24, "process info v2 is 24 bytes");
_Static_assert(offsetof(nv_process_info_t, gpu_instance_id) == 16, "gpuInstanceId at 16");
_Static_assert(offsetof(nv_process_info_t, compute_instance_id) == 20, "computeInstanceId at 20");

#define NV_GI_PROFILE_V2 NV_STRUCT_VERSION(nv_gi_profile_v2_t, 2) /* 0x02000098 */
#define NV_GI_PROFILE_V3 NV_STRUCT_VERSION(nv_gi_profile_v3_t, 3) /* 0x03000098 */
#define NV_CI_PROFILE_V2 NV_STRUCT_VERSION(nv_ci_profile_v2_t, 2) /* 0x02000088 */
_Static_assert(NV_GI_PROFILE_V2 == 0x02000098u, "GI v2 version word");
_Static_assert(NV_GI_PROFILE_V3 == 0x03000098u, "GI v3 version word");
_Static_assert(NV_CI_PROFILE_V2 == 0x02000088u, "CI v2 version word");

/* The public buffers' literal sizes must agree with the named limits. */
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(COUNT_OF(((shim_device_t *)0)->profiles) == SHIM_MAX_GI_PROFILES, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->ci_profiles) == SHIM_MAX_CI_PROFILES, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->gis) == SHIM_MAX_GIS, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->cis) == SHIM_MAX_CIS, "limit");
_Static_assert(COUNT_OF(((shim_ci_t *)0)->pids) == SHIM_MAX_PIDS, "limit");
_Static_assert(COUNT_OF(((shim_gi_profile_t *)0)->placements) == SHIM_MAX_GI_PLACEMENTS, "limit");
_Static_assert(COUNT_OF(((shim_ci_profile_t *)0)->placements) == SHIM_MAX_CI_PLACEMENTS, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->uuid) == SHIM_UUID_LEN, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->name) == SHIM_NAME_LEN, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->bus_id) == SHIM_BUS_ID_LEN, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->failed_call) == SHIM_CALL_LEN, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->unknown) == SHIM_MAX_UNKNOWN, "limit");
_Static_assert(COUNT_OF(((shim_device_t *)0)->unknown[0]) == SHIM_UNKNOWN_LEN, "limit");
_Static_assert(SHIM_MAX_GI_PROFILES == NV_GI_PROFILE_INDEX_COUNT, "every GI profile index fits");
_Static_assert(SHIM_MAX_CI_PROFILE_INDICES == NV_CI_PROFILE_INDEX_COUNT, "CI profile indices");

/* ------------------------------------------------------------------------------------------ */
/* The loaded library                                                                          */

static struct {
    nv_return_t (*init_with_flags)(unsigned int);
    nv_return_t (*init_v2)(void);
    nv_return_t (*shutdown)(void);
    const char *(*error_string)(nv_return_t);
    nv_return_t (*device_get_count)(unsigned int *);
    nv_return_t (*device_get_handle_by_index)(unsigned int, nv_device_t *);
    nv_return_t (*device_get_uuid)(nv_device_t, char *, unsigned int);
    nv_return_t (*device_get_name)(nv_device_t, char *, unsigned int);
    nv_return_t (*device_get_pci_info)(nv_device_t, nv_pci_info_t *);
    nv_return_t (*device_get_memory_info)(nv_device_t, nv_memory_t *);
    nv_return_t (*device_get_architecture)(nv_device_t, unsigned int *);
    nv_return_t (*device_get_mig_mode)(nv_device_t, unsigned int *, unsigned int *);
    nv_return_t (*device_set_mig_mode)(nv_device_t, unsigned int, nv_return_t *);
    nv_return_t (*gi_profile_info_v)(nv_device_t, unsigned int, void *);
    nv_return_t (*gi_profile_info_v1)(nv_device_t, unsigned int, nv_gi_profile_v1_t *);
    nv_return_t (*gi_possible_placements)(nv_device_t, unsigned int, nv_placement_t *,
                                          unsigned int *);
    nv_return_t (*create_gi_with_placement)(nv_device_t, unsigned int, const nv_placement_t *,
                                            nv_gi_t *);
    nv_return_t (*gi_destroy)(nv_gi_t);
    nv_return_t (*get_gis)(nv_device_t, unsigned int, nv_gi_t *, unsigned int *);
    nv_return_t (*get_gi_by_id)(nv_device_t, unsigned int, nv_gi_t *);
    nv_return_t (*gi_get_info)(nv_gi_t, nv_gi_info_t *);
    nv_return_t (*ci_profile_info_v)(nv_gi_t, unsigned int, unsigned int, void *);
    nv_return_t (*ci_possible_placements)(nv_gi_t, unsigned int, nv_placement_t *,
                                          unsigned int *);
    nv_return_t (*create_ci)(nv_gi_t, unsigned int, nv_ci_t *);
    nv_return_t (*create_ci_with_placement)(nv_gi_t, unsigned int, const nv_placement_t *,
                                            nv_ci_t *);
    nv_return_t (*ci_destroy)(nv_ci_t);
    nv_return_t (*get_cis)(nv_gi_t, unsigned int, nv_ci_t *, unsigned int *);
    nv_return_t (*get_ci_by_id)(nv_gi_t, unsigned int, nv_ci_t *);
    nv_return_t (*ci_get_info)(nv_ci_t, nv_ci_info_t *);
    nv_return_t (*max_mig_device_count)(nv_device_t, unsigned int *);
    nv_return_t (*mig_device_handle_by_index)(nv_device_t, unsigned int, nv_device_t *);
    nv_return_t (*mig_gpu_instance_id)(nv_device_t, unsigned int *);
    nv_return_t (*mig_compute_instance_id)(nv_device_t, unsigned int *);
    nv_return_t (*device_get_attributes)(nv_device_t, nv_attributes_t *);
    nv_return_t (*compute_processes)(nv_device_t, unsigned int *, nv_process_info_t *);
} nv;

static pthread_mutex_t g_load_lock = PTHREAD_MUTEX_INITIALIZER;
static void *g_handle;

/* Call an NVML function, or answer FUNCTION_NOT_FOUND when the library lacks it. */
#define NV(fn, ...) (nv.fn != NULL ? nv.fn(__VA_ARGS__) : NV_FUNCTION_NOT_FOUND)

/* The names we report for failed calls are the NVML symbols we call. */
#define S_COUNT "nvmlDeviceGetCount_v2"
#define S_HANDLE "nvmlDeviceGetHandleByIndex_v2"
#define S_UUID "nvmlDeviceGetUUID"
#define S_NAME "nvmlDeviceGetName"
#define S_PCI "nvmlDeviceGetPciInfo_v3"
#define S_MEMORY "nvmlDeviceGetMemoryInfo"
#define S_ARCH "nvmlDeviceGetArchitecture"
#define S_GET_MIG "nvmlDeviceGetMigMode"
#define S_SET_MIG "nvmlDeviceSetMigMode"
#define S_GIP_V "nvmlDeviceGetGpuInstanceProfileInfoV"
#define S_GIP_V1 "nvmlDeviceGetGpuInstanceProfileInfo"
#define S_GI_PLACEMENTS "nvmlDeviceGetGpuInstancePossiblePlacements_v2"
#define S_CREATE_GI "nvmlDeviceCreateGpuInstanceWithPlacement"
#define S_DESTROY_GI "nvmlGpuInstanceDestroy"
#define S_GET_GIS "nvmlDeviceGetGpuInstances"
#define S_GI_BY_ID "nvmlDeviceGetGpuInstanceById"
#define S_GI_INFO "nvmlGpuInstanceGetInfo"
#define S_CIP_V "nvmlGpuInstanceGetComputeInstanceProfileInfoV"
#define S_CI_PLACEMENTS "nvmlGpuInstanceGetComputeInstancePossiblePlacements"
#define S_CREATE_CI "nvmlGpuInstanceCreateComputeInstance"
#define S_CREATE_CI_AT "nvmlGpuInstanceCreateComputeInstanceWithPlacement"
#define S_DESTROY_CI "nvmlComputeInstanceDestroy"
#define S_GET_CIS "nvmlGpuInstanceGetComputeInstances"
#define S_CI_BY_ID "nvmlGpuInstanceGetComputeInstanceById"
#define S_CI_INFO "nvmlComputeInstanceGetInfo_v2"
#define S_MAX_MIG "nvmlDeviceGetMaxMigDeviceCount"
#define S_MIG_HANDLE "nvmlDeviceGetMigDeviceHandleByIndex"
#define S_MIG_GI_ID "nvmlDeviceGetGpuInstanceId"
#define S_MIG_CI_ID "nvmlDeviceGetComputeInstanceId"
#define S_ATTRIBUTES "nvmlDeviceGetAttributes_v2"
#define S_PROCESSES "nvmlDeviceGetComputeRunningProcesses_v3"

static void *sym(void *handle, const char *name)
{
    return dlsym(handle, name);
}

/* dlsym returns an object pointer; copying its bytes into the function pointer is the
 * conversion POSIX guarantees, without a cast that -Wpedantic builds would flag. */
#define RESOLVE(field, name)                                                                   \
    do {                                                                                       \
        void *p_ = sym(handle, name);                                                          \
        memcpy(&nv.field, &p_, sizeof p_);                                                     \
    } while (0)

static void resolve_all(void *handle)
{
    RESOLVE(init_with_flags, "nvmlInitWithFlags");
    RESOLVE(init_v2, "nvmlInit_v2");
    RESOLVE(shutdown, "nvmlShutdown");
    RESOLVE(error_string, "nvmlErrorString");
    RESOLVE(device_get_count, S_COUNT);
    RESOLVE(device_get_handle_by_index, S_HANDLE);
    RESOLVE(device_get_uuid, S_UUID);
    RESOLVE(device_get_name, S_NAME);
    RESOLVE(device_get_pci_info, S_PCI);
    RESOLVE(device_get_memory_info, S_MEMORY);
    RESOLVE(device_get_architecture, S_ARCH);
    RESOLVE(device_get_mig_mode, S_GET_MIG);
    RESOLVE(device_set_mig_mode, S_SET_MIG);
    RESOLVE(gi_profile_info_v, S_GIP_V);
    RESOLVE(gi_profile_info_v1, S_GIP_V1);
    RESOLVE(gi_possible_placements, S_GI_PLACEMENTS);
    RESOLVE(create_gi_with_placement, S_CREATE_GI);
    RESOLVE(gi_destroy, S_DESTROY_GI);
    RESOLVE(get_gis, S_GET_GIS);
    RESOLVE(get_gi_by_id, S_GI_BY_ID);
    RESOLVE(gi_get_info, S_GI_INFO);
    RESOLVE(ci_profile_info_v, S_CIP_V);
    RESOLVE(ci_possible_placements, S_CI_PLACEMENTS);
    RESOLVE(create_ci, S_CREATE_CI);
    RESOLVE(create_ci_with_placement, S_CREATE_CI_AT);
    RESOLVE(ci_destroy, S_DESTROY_CI);
    RESOLVE(get_cis, S_GET_CIS);
    RESOLVE(get_ci_by_id, S_CI_BY_ID);
    RESOLVE(ci_get_info, S_CI_INFO);
    RESOLVE(max_mig_device_count, S_MAX_MIG);
    RESOLVE(mig_device_handle_by_index, S_MIG_HANDLE);
    RESOLVE(mig_gpu_instance_id, S_MIG_GI_ID);
    RESOLVE(mig_compute_instance_id, S_MIG_CI_ID);
    RESOLVE(device_get_attributes, S_ATTRIBUTES);
    RESOLVE(compute_processes, S_PROCESSES);
}

static void append(char *buf, unsigned int len, size_t *used, const char *a, const char *b)
{
    int n;
    if (buf == NULL || len == 0 || *used >= len - 1)
        return;
    n = snprintf(buf + *used, len - *used, "%s: %s\n", a, b);
    if (n > 0)
        *used += (size_t)n < len - *used ? (size_t)n : len - *used - 1;
}

int shim_abi_version(void)
{
    return SHIM_ABI_VERSION;
}

int shim_load(const char *const *paths, unsigned int n, char *errbuf, unsigned int errlen)
{
    unsigned int i;
    size_t used = 0;
    int result = SHIM_LOAD_FAILED;

    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    pthread_mutex_lock(&g_load_lock);
    if (g_handle != NULL) {
        pthread_mutex_unlock(&g_load_lock);
        return SHIM_LOAD_ALREADY;
    }
    for (i = 0; i < n; i++) {
        const char *err;
        void *handle;
        (void)dlerror();
        /* RTLD_LOCAL keeps NVML's symbols out of the global namespace; other NVML clients in
         * the process (pynvml) still find this object when they open it by its soname. */
        handle = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
            size_t plen = strlen(paths[i]);
            err = dlerror();
            if (err == NULL)
                err = "dlopen failed";
            /* glibc's message usually starts with the path again; say it once */
            if (strncmp(err, paths[i], plen) == 0 && strncmp(err + plen, ": ", 2) == 0)
                err += plen + 2;
            append(errbuf, errlen, &used, paths[i], err);
            continue;
        }
        memset(&nv, 0, sizeof nv);
        resolve_all(handle);
        if ((nv.init_with_flags == NULL && nv.init_v2 == NULL) || nv.shutdown == NULL) {
            append(errbuf, errlen, &used, paths[i],
                   "not an NVML library (no nvmlInitWithFlags/nvmlInit_v2 or nvmlShutdown)");
            memset(&nv, 0, sizeof nv);
            dlclose(handle);
            continue;
        }
        g_handle = handle;
        result = (int)i;
        break;
    }
    pthread_mutex_unlock(&g_load_lock);
    return result;
}

int shim_is_loaded(void)
{
    int loaded;
    pthread_mutex_lock(&g_load_lock);
    loaded = g_handle != NULL;
    pthread_mutex_unlock(&g_load_lock);
    return loaded;
}

int shim_library_path(char *buf, unsigned int len)
{
    Dl_info info;
    void *addr;
    if (buf == NULL || len == 0)
        return -1;
    buf[0] = '\0';
    if (!shim_is_loaded())
        return -1;
    memcpy(&addr, &nv.shutdown, sizeof addr);
    if (dladdr(addr, &info) == 0 || info.dli_fname == NULL)
        return -1;
    snprintf(buf, len, "%s", info.dli_fname);
    return 0;
}

int shim_has_symbol(const char *name)
{
    void *handle;
    pthread_mutex_lock(&g_load_lock);
    handle = g_handle;
    pthread_mutex_unlock(&g_load_lock);
    return handle != NULL && name != NULL && dlsym(handle, name) != NULL;
}

/* How many times this process has NVML open (inits that succeeded minus shutdowns): the kept
 * tables live while it is open at least once, since a driver reloaded in between may differ. */
static unsigned int g_nvml_opens;
static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static void forget_tables_locked(int index);

int shim_init(void)
{
    nv_return_t rc;
    if (!shim_is_loaded())
        return NV_LIBRARY_NOT_FOUND;
    rc = nv.init_with_flags != NULL ? nv.init_with_flags(0) : nv.init_v2();
    if (rc == NV_SUCCESS) {
        pthread_mutex_lock(&g_cache_lock);
        g_nvml_opens++;
        pthread_mutex_unlock(&g_cache_lock);
    }
    return rc;
}

int shim_shutdown(void)
{
    nv_return_t rc;
    if (!shim_is_loaded())
        return NV_LIBRARY_NOT_FOUND;
    rc = nv.shutdown();
    if (rc == NV_SUCCESS) {
        pthread_mutex_lock(&g_cache_lock);
        if (g_nvml_opens > 0 && --g_nvml_opens == 0)
            forget_tables_locked(-1);
        pthread_mutex_unlock(&g_cache_lock);
    }
    return rc;
}

static const struct {
    int code;
    const char *name;
    const char *text;
} g_return_codes[] = {
#define SHIM_CODE_ROW(code, name, text) {code, #name, text},
    SHIM_NVML_RETURN_CODES(SHIM_CODE_ROW)
#undef SHIM_CODE_ROW
};

static int return_code_row(int code)
{
    unsigned int i;
    for (i = 0; i < COUNT_OF(g_return_codes); i++)
        if (g_return_codes[i].code == code)
            return (int)i;
    return -1;
}

const char *shim_error_name(int code)
{
    int row = return_code_row(code);
    return row < 0 ? NULL : g_return_codes[row].name;
}

const char *shim_error_text(int code)
{
    int row = return_code_row(code);
    return row < 0 ? NULL : g_return_codes[row].text;
}

int shim_return_code_at(unsigned int i)
{
    return i < COUNT_OF(g_return_codes) ? g_return_codes[i].code : -1;
}

const char *shim_error_string(int code)
{
    int row;
    if (code >= 0 && nv.error_string != NULL) { /* negative statuses are the shim's own */
        const char *text = nv.error_string(code);
        if (text != NULL)
            return text;
    }
    switch (code) {
    case SHIM_STATUS_READ_ONLY: return "Refused: MIGKIT_READ_ONLY is set";
    case SHIM_STATUS_NOT_ATTEMPTED: return "Not attempted: an earlier item failed";
    default: break;
    }
    row = return_code_row(code);
    return row < 0 ? "Unknown Error" : g_return_codes[row].text;
}

int shim_read_only(void)
{
    const char *value = getenv("MIGKIT_READ_ONLY");
    return value != NULL && value[0] != '\0' && strcmp(value, "0") != 0;
}

int shim_device_count(unsigned int *count)
{
    *count = 0;
    return NV(device_get_count, count);
}

/* ------------------------------------------------------------------------------------------ */
/* Snapshot                                                                                    */

/* What never changes for one GPU while its UUID and MIG mode stay the same: its identity, its
 * GPU-instance profiles with their placements, and the compute-instance profiles of each
 * GPU-instance profile (read through a live GPU instance of it, so filled in as they appear).
 * NVML documents the profile tables as properties of the GPU (possible placements do not
 * depend on what is occupied); the MIG mode is read on every snapshot and a change drops the
 * tables, a UUID change drops everything. Only reads that all succeeded are kept. */
#define CACHE_MAX_CI_PROFILES 64
typedef struct {
    int valid;                    /* identity below is known */
    char uuid[SHIM_UUID_LEN];
    char name[SHIM_NAME_LEN];
    char bus_id[SHIM_BUS_ID_LEN];
    unsigned int pci_device_id;
    unsigned int pci_subsystem_id;
    unsigned int architecture;
    unsigned long long memory_total;
    int tables;                   /* profiles[] valid for mig_mode */
    unsigned int mig_mode;
    unsigned int profile_count;
    shim_gi_profile_t profiles[SHIM_MAX_GI_PROFILES];
    unsigned char ci_read[SHIM_MAX_GI_PROFILES]; /* CI profiles of profiles[k] are cached */
    unsigned int ci_profile_count;
    shim_ci_profile_t ci_profiles[CACHE_MAX_CI_PROFILES];
} table_cache_t;

static table_cache_t g_cache[SHIM_MAX_DEVICES];

static void forget_tables_locked(int index)
{
    unsigned int i;
    for (i = 0; i < SHIM_MAX_DEVICES; i++)
        if (index < 0 || (unsigned int)index == i)
            g_cache[i].valid = g_cache[i].tables = 0;
}

void shim_forget_tables(int index)
{
    pthread_mutex_lock(&g_cache_lock);
    forget_tables_locked(index);
    pthread_mutex_unlock(&g_cache_lock);
}

static void note(shim_device_t *d, const char *call, nv_return_t rc)
{
    if (d->status != 0)
        return;
    d->status = rc;
    snprintf(d->failed_call, sizeof d->failed_call, "%s", call);
}

/* A read failed and the fact it was for is unknown: say which call, what for, and the error. */
static void unknown(shim_device_t *d, const char *call, nv_return_t rc, const char *what, ...)
    __attribute__((format(printf, 4, 5)));

static void unknown(shim_device_t *d, const char *call, nv_return_t rc, const char *what, ...)
{
    char *line;
    const char *name = shim_error_name(rc);
    int n;
    va_list args;
    if (d->unknown_count++ >= SHIM_MAX_UNKNOWN)
        return;
    line = d->unknown[d->unknown_count - 1];
    n = snprintf(line, SHIM_UNKNOWN_LEN, "%s (", call);
    if (n < 0 || n >= SHIM_UNKNOWN_LEN)
        return;
    va_start(args, what);
    n += vsnprintf(line + n, SHIM_UNKNOWN_LEN - (size_t)n, what, args);
    va_end(args);
    if (n < 0 || n >= SHIM_UNKNOWN_LEN)
        return;
    if (name != NULL)
        snprintf(line + n, SHIM_UNKNOWN_LEN - (size_t)n, "): %s", name);
    else
        snprintf(line + n, SHIM_UNKNOWN_LEN - (size_t)n, "): error %d", rc);
}

static void copy_name(char *dst, const char *src, size_t cap)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Read the profile at `index` into p, preferring the v3 struct; a driver that rejects v3's
 * version word gets v2 from then on (*version is per GPU), one without the V call gets v1. */
static nv_return_t read_gi_profile(nv_device_t dev, unsigned int index, unsigned int *version,
                                   shim_gi_profile_t *p)
{
    nv_return_t rc;
    if (nv.gi_profile_info_v != NULL && *version == 3) {
        nv_gi_profile_v3_t v3;
        memset(&v3, 0, sizeof v3);
        v3.version = NV_GI_PROFILE_V3;
        rc = nv.gi_profile_info_v(dev, index, &v3);
        if (rc == NV_SUCCESS) {
            p->info_version = 3;
            p->id = v3.id;
            p->slice_count = v3.slice_count;
            p->instance_count = v3.instance_count;
            p->multiprocessors = v3.multiprocessors;
            p->copy_engines = v3.copy_engines;
            p->decoders = v3.decoders;
            p->encoders = v3.encoders;
            p->jpegs = v3.jpegs;
            p->ofas = v3.ofas;
            p->memory_mib = v3.memory_mib;
            p->capabilities = v3.capabilities;
            copy_name(p->name, v3.name, sizeof p->name);
            return rc;
        }
        if (rc != NV_INVALID_ARGUMENT && rc != NV_ARGUMENT_VERSION_MISMATCH)
            return rc;
        *version = 2;
    }
    if (nv.gi_profile_info_v != NULL && *version == 2) {
        nv_gi_profile_v2_t v2;
        memset(&v2, 0, sizeof v2);
        v2.version = NV_GI_PROFILE_V2;
        rc = nv.gi_profile_info_v(dev, index, &v2);
        if (rc == NV_SUCCESS) {
            p->info_version = 2;
            p->id = v2.id;
            p->p2p = v2.p2p;
            p->slice_count = v2.slice_count;
            p->instance_count = v2.instance_count;
            p->multiprocessors = v2.multiprocessors;
            p->copy_engines = v2.copy_engines;
            p->decoders = v2.decoders;
            p->encoders = v2.encoders;
            p->jpegs = v2.jpegs;
            p->ofas = v2.ofas;
            p->memory_mib = v2.memory_mib;
            copy_name(p->name, v2.name, sizeof p->name);
        }
        return rc;
    }
    {
        nv_gi_profile_v1_t v1;
        memset(&v1, 0, sizeof v1);
        rc = NV(gi_profile_info_v1, dev, index, &v1);
        if (rc == NV_SUCCESS) {
            p->info_version = 1;
            p->id = v1.id;
            p->p2p = v1.p2p;
            p->slice_count = v1.slice_count;
            p->instance_count = v1.instance_count;
            p->multiprocessors = v1.multiprocessors;
            p->copy_engines = v1.copy_engines;
            p->decoders = v1.decoders;
            p->encoders = v1.encoders;
            p->jpegs = v1.jpegs;
            p->ofas = v1.ofas;
            p->memory_mib = v1.memory_mib;
        }
        return rc;
    }
}

static void snap_profiles(nv_device_t dev, shim_device_t *d)
{
    unsigned int index, version = 3;
    for (index = 0; index < NV_GI_PROFILE_INDEX_COUNT; index++) {
        shim_gi_profile_t *p = &d->profiles[d->profile_count];
        nv_placement_t placements[64];
        unsigned int count = 0, i;
        nv_return_t rc;
        memset(p, 0, sizeof *p);
        rc = read_gi_profile(dev, index, &version, p);
        if (rc == NV_NOT_SUPPORTED)
            continue;
        if (rc == NV_INVALID_ARGUMENT) /* past the driver's last profile index */
            break;
        if (rc != NV_SUCCESS) {
            unknown(d, nv.gi_profile_info_v != NULL ? S_GIP_V : S_GIP_V1, rc,
                    "GPU instance profile index %u", index);
            continue;
        }
        p->index = index;
        d->profile_count++;
        /* One call with room for far more placements than any GPU has (a placement read costs
         * ~200 us on a real GPU): NVML fills the array and sets count, or answers
         * INSUFFICIENT_SIZE with the count it needs. */
        count = COUNT_OF(placements);
        rc = NV(gi_possible_placements, dev, p->id, placements, &count);
        if (rc == NV_INSUFFICIENT_SIZE) {
            d->truncated |= SHIM_TRUNC_GI_PLACEMENTS;
            continue;
        }
        if (rc != NV_SUCCESS) {
            unknown(d, S_GI_PLACEMENTS, rc, "placements of GPU instance profile %u", p->id);
            continue;
        }
        if (count > SHIM_MAX_GI_PLACEMENTS) {
            d->truncated |= SHIM_TRUNC_GI_PLACEMENTS;
            count = SHIM_MAX_GI_PLACEMENTS;
        }
        for (i = 0; i < count; i++) {
            p->placements[i].start = placements[i].start;
            p->placements[i].size = placements[i].size;
        }
        p->placement_count = count;
    }
}

/* Compute slices of each CI profile index (NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE .. 2_SLICE_REV1). */
static const unsigned int g_ci_index_slices[NV_CI_PROFILE_INDEX_COUNT] = {1, 2, 3, 4, 7, 8, 6, 1, 2};

/* The CI profiles of a GI profile are only reachable through a live GI of that profile. A
 * compute instance cannot have more compute slices than its GPU instance, so indices of larger
 * profiles are not asked about (each answer costs ~300 us on a real GPU). */
static void snap_ci_profiles(nv_gi_t gi, unsigned int gi_profile_id, unsigned int gi_slices,
                             shim_device_t *d)
{
    unsigned int index;
    for (index = 0; index < NV_CI_PROFILE_INDEX_COUNT; index++) {
        nv_ci_profile_v2_t info;
        nv_placement_t placements[32];
        unsigned int count = 0, i;
        shim_ci_profile_t *cp;
        nv_return_t rc;

        if (g_ci_index_slices[index] > gi_slices)
            continue;
        memset(&info, 0, sizeof info);
        info.version = NV_CI_PROFILE_V2;
        rc = NV(ci_profile_info_v, gi, index, NV_CI_ENGINE_PROFILE_SHARED, &info);
        if (rc == NV_NOT_SUPPORTED)
            continue;
        if (rc == NV_INVALID_ARGUMENT)
            break;
        if (rc != NV_SUCCESS) {
            unknown(d, S_CIP_V, rc, "compute instance profile index %u of GPU instance profile %u",
                    index, gi_profile_id);
            continue;
        }
        if (d->ci_profile_count >= SHIM_MAX_CI_PROFILES) {
            d->truncated |= SHIM_TRUNC_CI_PROFILES;
            return;
        }
        cp = &d->ci_profiles[d->ci_profile_count++];
        memset(cp, 0, sizeof *cp);
        cp->gi_profile_id = gi_profile_id;
        cp->index = index;
        cp->id = info.id;
        cp->slice_count = info.slice_count;
        cp->instance_count = info.instance_count;
        cp->multiprocessors = info.multiprocessors;
        cp->copy_engines = info.copy_engines;
        cp->decoders = info.decoders;
        cp->encoders = info.encoders;
        cp->jpegs = info.jpegs;
        cp->ofas = info.ofas;
        copy_name(cp->name, info.name, sizeof cp->name);

        count = COUNT_OF(placements); /* one call, as for GPU-instance placements */
        rc = NV(ci_possible_placements, gi, cp->id, placements, &count);
        if (rc == NV_INSUFFICIENT_SIZE) {
            d->truncated |= SHIM_TRUNC_CI_PLACEMENTS;
            continue;
        }
        if (rc != NV_SUCCESS) {
            unknown(d, S_CI_PLACEMENTS, rc, "placements of compute instance profile %u", cp->id);
            continue;
        }
        if (count > SHIM_MAX_CI_PLACEMENTS) {
            d->truncated |= SHIM_TRUNC_CI_PLACEMENTS;
            count = SHIM_MAX_CI_PLACEMENTS;
        }
        for (i = 0; i < count; i++) {
            cp->placements[i].start = placements[i].start;
            cp->placements[i].size = placements[i].size;
        }
        cp->placement_count = count;
    }
}

static void snap_compute_instances(nv_gi_t gi, shim_gi_t *g, shim_device_t *d)
{
    unsigned int k;
    g->first_ci = d->ci_count;
    for (k = 0; k < d->ci_profile_count; k++) {
        const shim_ci_profile_t *cp = &d->ci_profiles[k];
        nv_ci_t cis[SHIM_MAX_CIS_PER_GI];
        unsigned int count, i;
        nv_return_t rc;
        if (cp->gi_profile_id != g->profile_id || cp->instance_count == 0)
            continue;
        if (cp->instance_count > SHIM_MAX_CIS_PER_GI) {
            d->truncated |= SHIM_TRUNC_CIS;
            continue;
        }
        count = cp->instance_count; /* the array has room for the profile's instanceCount */
        rc = NV(get_cis, gi, cp->id, cis, &count);
        if (rc != NV_SUCCESS) {
            unknown(d, S_GET_CIS, rc, "compute instances of profile %u in GPU instance %u", cp->id,
                    g->id);
            continue;
        }
        if (count > cp->instance_count)
            count = cp->instance_count;
        for (i = 0; i < count; i++) {
            nv_ci_info_t info;
            shim_ci_t *c;
            memset(&info, 0, sizeof info);
            rc = NV(ci_get_info, cis[i], &info);
            if (rc != NV_SUCCESS) {
                unknown(d, S_CI_INFO, rc, "identity of a compute instance of GPU instance %u",
                        g->id);
                continue;
            }
            if (d->ci_count >= SHIM_MAX_CIS) {
                d->truncated |= SHIM_TRUNC_CIS;
                return;
            }
            c = &d->cis[d->ci_count++];
            memset(c, 0, sizeof *c);
            c->gi_id = g->id;
            c->id = info.id;
            c->profile_id = info.profile_id;
            c->start = info.placement.start;
            c->size = info.placement.size;
            g->ci_count++;
        }
    }
}

/* The CI profiles of GPU-instance profile slot k, from the cache or read through `gi`. */
static void ci_profiles_of(nv_gi_t gi, unsigned int k, shim_device_t *d, table_cache_t *cache)
{
    unsigned int gi_profile_id = d->profiles[k].id, start = d->ci_profile_count, before, i;
    if (cache != NULL && cache->ci_read[k]) {
        for (i = 0; i < cache->ci_profile_count; i++) {
            if (cache->ci_profiles[i].gi_profile_id != gi_profile_id)
                continue;
            if (d->ci_profile_count >= SHIM_MAX_CI_PROFILES) {
                d->truncated |= SHIM_TRUNC_CI_PROFILES;
                return;
            }
            d->ci_profiles[d->ci_profile_count++] = cache->ci_profiles[i];
        }
        return;
    }
    before = d->unknown_count;
    snap_ci_profiles(gi, gi_profile_id, d->profiles[k].slice_count, d);
    if (cache == NULL || d->unknown_count != before || d->truncated ||
        cache->ci_profile_count + (d->ci_profile_count - start) > CACHE_MAX_CI_PROFILES)
        return;
    for (i = start; i < d->ci_profile_count; i++)
        cache->ci_profiles[cache->ci_profile_count++] = d->ci_profiles[i];
    cache->ci_read[k] = 1;
}

static void snap_gpu_instances(nv_device_t dev, shim_device_t *d, table_cache_t *cache)
{
    unsigned int k;
    unsigned char ci_profiles_read[SHIM_MAX_GI_PROFILES];
    memset(ci_profiles_read, 0, sizeof ci_profiles_read);
    for (k = 0; k < d->profile_count; k++) {
        const shim_gi_profile_t *p = &d->profiles[k];
        nv_gi_t gis[SHIM_MAX_GIS];
        unsigned int count, i;
        nv_return_t rc;
        if (p->instance_count == 0)
            continue;
        if (p->instance_count > SHIM_MAX_GIS) {
            d->truncated |= SHIM_TRUNC_GIS;
            continue;
        }
        count = p->instance_count; /* the array has room for the profile's instanceCount */
        rc = NV(get_gis, dev, p->id, gis, &count);
        if (rc != NV_SUCCESS) {
            unknown(d, S_GET_GIS, rc, "GPU instances of profile %u", p->id);
            continue;
        }
        if (count > p->instance_count)
            count = p->instance_count;
        for (i = 0; i < count; i++) {
            nv_gi_info_t info;
            shim_gi_t *g;
            memset(&info, 0, sizeof info);
            rc = NV(gi_get_info, gis[i], &info);
            if (rc != NV_SUCCESS) {
                unknown(d, S_GI_INFO, rc, "identity of a GPU instance of profile %u", p->id);
                continue;
            }
            if (d->gi_count >= SHIM_MAX_GIS) {
                d->truncated |= SHIM_TRUNC_GIS;
                return;
            }
            g = &d->gis[d->gi_count++];
            memset(g, 0, sizeof *g);
            g->id = info.id;
            g->profile_id = info.profile_id;
            g->start = info.placement.start;
            g->size = info.placement.size;
            if (!ci_profiles_read[k]) {
                ci_profiles_read[k] = 1;
                ci_profiles_of(gis[i], k, d, cache);
            }
            snap_compute_instances(gis[i], g, d);
        }
    }
}

/* The processes on one MIG device. A failed query (an old driver without the call included)
 * leaves the compute instance's in-use state unknown, never "not in use". */
static void snap_processes(nv_device_t mig, shim_ci_t *c, shim_device_t *d)
{
    nv_process_info_t procs[SHIM_MAX_PIDS];
    unsigned int count = SHIM_MAX_PIDS, i;
    nv_return_t rc;
    memset(procs, 0, sizeof procs);
    rc = NV(compute_processes, mig, &count, procs);
    c->process_status = rc;
    if (rc == NV_INSUFFICIENT_SIZE) { /* count says how many; keep none of the partial array */
        c->process_count = count;
        return;
    }
    if (rc != NV_SUCCESS) {
        unknown(d, S_PROCESSES, rc, "in-use state of GPU instance %u, compute instance %u",
                c->gi_id, c->id);
        return;
    }
    if (count > SHIM_MAX_PIDS) /* a library that ignored the capacity */
        count = SHIM_MAX_PIDS;
    c->process_count = count;
    for (i = 0; i < count; i++)
        c->pids[i] = procs[i].pid;
}

static void snap_mig_devices(nv_device_t dev, shim_device_t *d)
{
    unsigned int max = 0, i;
    nv_return_t rc = NV(max_mig_device_count, dev, &max);
    if (rc != NV_SUCCESS) {
        unknown(d, S_MAX_MIG, rc, "MIG devices, so the in-use state of every compute instance");
        return;
    }
    d->max_mig_devices = max;
    for (i = 0; i < max; i++) {
        nv_device_t mig;
        unsigned int gi_id = 0, ci_id = 0, k;
        shim_ci_t *c = NULL;
        nv_memory_t memory;
        nv_attributes_t attributes;

        rc = NV(mig_device_handle_by_index, dev, i, &mig);
        /* No MIG device at this index: MIG device indices can have gaps. A compute instance
         * whose device is never found is flagged after the loop. */
        if (rc == NV_NOT_FOUND || rc == NV_INVALID_ARGUMENT)
            continue;
        if (rc != NV_SUCCESS) {
            unknown(d, S_MIG_HANDLE, rc, "MIG device %u", i);
            continue;
        }
        rc = NV(mig_gpu_instance_id, mig, &gi_id);
        if (rc != NV_SUCCESS) {
            unknown(d, S_MIG_GI_ID, rc, "GPU instance of MIG device %u", i);
            continue;
        }
        rc = NV(mig_compute_instance_id, mig, &ci_id);
        if (rc != NV_SUCCESS) {
            unknown(d, S_MIG_CI_ID, rc, "compute instance of MIG device %u", i);
            continue;
        }
        for (k = 0; k < d->ci_count; k++) {
            if (d->cis[k].gi_id == gi_id && d->cis[k].id == ci_id) {
                c = &d->cis[k];
                break;
            }
        }
        if (c == NULL) {
            /* Not in the instance listing: created since, or a listing read that failed. */
            unknown(d, S_MIG_HANDLE, NV_NOT_FOUND,
                    "MIG device %u: GPU instance %u, compute instance %u is not in the listing",
                    i, gi_id, ci_id);
            continue;
        }
        rc = NV(device_get_uuid, mig, c->uuid, sizeof c->uuid);
        if (rc != NV_SUCCESS)
            unknown(d, S_UUID, rc, "UUID of GPU instance %u, compute instance %u", gi_id, ci_id);
        memset(&memory, 0, sizeof memory);
        rc = NV(device_get_memory_info, mig, &memory);
        if (rc != NV_SUCCESS)
            unknown(d, S_MEMORY, rc, "memory of GPU instance %u, compute instance %u", gi_id,
                    ci_id);
        c->memory_mib = memory.total >> 20;
        memset(&attributes, 0, sizeof attributes);
        rc = NV(device_get_attributes, mig, &attributes);
        if (rc != NV_SUCCESS) {
            unknown(d, S_ATTRIBUTES, rc, "attributes of GPU instance %u, compute instance %u",
                    gi_id, ci_id);
        } else {
            c->multiprocessors = attributes.multiprocessors;
            c->copy_engines = attributes.copy_engines;
            c->decoders = attributes.decoders;
            c->encoders = attributes.encoders;
            c->jpegs = attributes.jpegs;
            c->ofas = attributes.ofas;
            c->gi_slice_count = attributes.gi_slice_count;
            c->ci_slice_count = attributes.ci_slice_count;
        }
        snap_processes(mig, c, d);
        c->has_mig_device = 1;
        d->mig_device_count++;
    }
    for (i = 0; i < d->ci_count; i++)
        if (!d->cis[i].has_mig_device)
            unknown(d, S_MIG_HANDLE, NV_NOT_FOUND,
                    "in-use state of GPU instance %u, compute instance %u: no MIG device found",
                    d->cis[i].gi_id, d->cis[i].id);
}

/* The GPU-instance profiles, from the cache when it holds them for this mode, else read (and
 * kept when every read succeeded). With `tables_if_needed`, a GPU with MIG off whose tables are
 * not cached is left without them (tables_skipped = 1). */
static void profiles_of(nv_device_t dev, shim_device_t *d, table_cache_t *cache,
                        int tables_if_needed)
{
    unsigned int before = d->unknown_count;
    if (cache->tables && cache->mig_mode == d->mig_mode) {
        d->profile_count = cache->profile_count;
        memcpy(d->profiles, cache->profiles, cache->profile_count * sizeof d->profiles[0]);
        return;
    }
    cache->tables = 0;
    cache->ci_profile_count = 0;
    memset(cache->ci_read, 0, sizeof cache->ci_read);
    if (tables_if_needed && d->mig_mode != 1) {
        d->tables_skipped = 1;
        return;
    }
    snap_profiles(dev, d);
    if (d->unknown_count != before || d->truncated)
        return;
    cache->profile_count = d->profile_count;
    memcpy(cache->profiles, d->profiles, d->profile_count * sizeof d->profiles[0]);
    cache->mig_mode = d->mig_mode;
    cache->tables = 1;
}

/* Identity: UUID always (it tells another GPU at this index); the rest from the cache when
 * the UUID is the cached one. Returns 0 when a read failed (noted in d). */
static int identity_of(nv_device_t dev, shim_device_t *d, table_cache_t *cache)
{
    nv_pci_info_t pci;
    nv_memory_t memory;
    nv_return_t rc = NV(device_get_uuid, dev, d->uuid, sizeof d->uuid);
    if (rc != NV_SUCCESS) {
        note(d, S_UUID, rc);
        return 0;
    }
    if (cache->valid && strcmp(cache->uuid, d->uuid) == 0) {
        memcpy(d->name, cache->name, sizeof d->name);
        memcpy(d->bus_id, cache->bus_id, sizeof d->bus_id);
        d->pci_device_id = cache->pci_device_id;
        d->pci_subsystem_id = cache->pci_subsystem_id;
        d->architecture = cache->architecture;
        d->memory_total = cache->memory_total;
        return 1;
    }
    memset(cache, 0, sizeof *cache); /* another GPU, or none known: forget everything */
    rc = NV(device_get_name, dev, d->name, sizeof d->name);
    if (rc != NV_SUCCESS)
        note(d, S_NAME, rc);
    memset(&pci, 0, sizeof pci);
    rc = NV(device_get_pci_info, dev, &pci);
    if (rc != NV_SUCCESS) {
        note(d, S_PCI, rc);
    } else {
        d->pci_device_id = pci.pci_device_id;
        d->pci_subsystem_id = pci.pci_subsystem_id;
        copy_name(d->bus_id, pci.bus_id, sizeof d->bus_id);
    }
    memset(&memory, 0, sizeof memory);
    rc = NV(device_get_memory_info, dev, &memory);
    if (rc != NV_SUCCESS)
        note(d, S_MEMORY, rc);
    d->memory_total = memory.total;
    rc = NV(device_get_architecture, dev, &d->architecture);
    if (rc != NV_SUCCESS)
        note(d, S_ARCH, rc);
    if (d->status != 0)
        return 0;
    memcpy(cache->uuid, d->uuid, sizeof cache->uuid);
    memcpy(cache->name, d->name, sizeof cache->name);
    memcpy(cache->bus_id, d->bus_id, sizeof cache->bus_id);
    cache->pci_device_id = d->pci_device_id;
    cache->pci_subsystem_id = d->pci_subsystem_id;
    cache->architecture = d->architecture;
    cache->memory_total = d->memory_total;
    cache->valid = 1;
    return 1;
}

static void snap_device(unsigned int index, shim_device_t *d, unsigned int flags)
{
    nv_device_t dev;
    unsigned int current = 0, pending = 0;
    table_cache_t *cache = &g_cache[index];
    nv_return_t rc;

    /* Every record is zeroed before it is filled (the header here, each array entry where it
     * is taken), so two snapshots of the same state are identical bytes. */
    memset(d, 0, offsetof(shim_device_t, profiles));
    d->index = index;
    rc = NV(device_get_handle_by_index, index, &dev);
    if (rc != NV_SUCCESS) {
        note(d, S_HANDLE, rc);
        return;
    }
    if (!identity_of(dev, d, cache))
        return;
    rc = NV(device_get_mig_mode, dev, &current, &pending);
    if (rc == NV_NOT_SUPPORTED) { /* the way NVIDIA's own tools tell MIG capability */
        cache->tables = 0;
        return;
    }
    if (rc != NV_SUCCESS) {
        cache->tables = 0;
        note(d, S_GET_MIG, rc);
        return;
    }
    d->mig_capable = 1;
    d->mig_mode = current;
    d->pending_mig_mode = pending;
    profiles_of(dev, d, cache, (flags & SHIM_SNAP_TABLES_IF_NEEDED) != 0);
    if (current == 1) {
        snap_gpu_instances(dev, d, cache);
        snap_mig_devices(dev, d);
    }
}

int shim_snapshot(shim_device_t *out, unsigned int capacity, unsigned int *count,
                  unsigned int flags)
{
    unsigned int n = 0, i;
    nv_return_t rc = NV(device_get_count, &n);
    *count = n;
    if (rc != NV_SUCCESS)
        return rc;
    pthread_mutex_lock(&g_cache_lock);
    for (i = 0; i < n && i < capacity && i < SHIM_MAX_DEVICES; i++)
        snap_device(i, &out[i], flags);
    pthread_mutex_unlock(&g_cache_lock);
    return n > capacity ? NV_INSUFFICIENT_SIZE : NV_SUCCESS;
}

static int same_device(const shim_device_t *a, const shim_device_t *b)
{
    /* The header holds every count, so equal headers mean equal used lengths below. */
    if (memcmp(a, b, offsetof(shim_device_t, profiles)) != 0)
        return 0;
    return memcmp(a->profiles, b->profiles, a->profile_count * sizeof a->profiles[0]) == 0 &&
           memcmp(a->ci_profiles, b->ci_profiles,
                  a->ci_profile_count * sizeof a->ci_profiles[0]) == 0 &&
           memcmp(a->gis, b->gis, a->gi_count * sizeof a->gis[0]) == 0 &&
           memcmp(a->cis, b->cis, a->ci_count * sizeof a->cis[0]) == 0;
}

void shim_same_devices(const shim_device_t *a, const shim_device_t *b, unsigned int n,
                       unsigned char *same)
{
    unsigned int i;
    for (i = 0; i < n; i++)
        same[i] = (unsigned char)same_device(&a[i], &b[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Bulk changes                                                                                */

static nv_return_t create_gpu_instance(shim_gi_create_t *r)
{
    nv_device_t dev;
    nv_gi_t gi;
    nv_gi_info_t info;
    nv_placement_t placement;
    nv_return_t rc = NV(device_get_handle_by_index, r->device, &dev);
    if (rc != NV_SUCCESS) {
        r->call = S_HANDLE;
        return rc;
    }
    placement.start = r->start;
    placement.size = r->size;
    r->created = 0;
    rc = NV(create_gi_with_placement, dev, r->profile_id, &placement, &gi);
    if (rc != NV_SUCCESS) {
        r->call = S_CREATE_GI;
        return rc;
    }
    /* From here on the instance exists: a failed read-back must not make it look uncreated. */
    r->created = 1;
    memset(&info, 0, sizeof info);
    rc = NV(gi_get_info, gi, &info);
    if (rc != NV_SUCCESS) {
        r->call = S_GI_INFO;
        return rc;
    }
    r->gi_id = info.id;
    r->start = info.placement.start;
    r->size = info.placement.size;
    return NV_SUCCESS;
}

static nv_return_t gpu_instance_by_id(unsigned int device, unsigned int gi_id, nv_gi_t *gi,
                                      const char **call)
{
    nv_device_t dev;
    nv_return_t rc = NV(device_get_handle_by_index, device, &dev);
    if (rc != NV_SUCCESS) {
        *call = S_HANDLE;
        return rc;
    }
    rc = NV(get_gi_by_id, dev, gi_id, gi);
    if (rc != NV_SUCCESS)
        *call = S_GI_BY_ID;
    return rc;
}

static nv_return_t create_compute_instance(shim_ci_create_t *r)
{
    nv_gi_t gi;
    nv_ci_t ci;
    nv_ci_info_t info;
    nv_return_t rc;
    r->created = 0;
    rc = gpu_instance_by_id(r->device, r->gi_id, &gi, &r->call);
    if (rc != NV_SUCCESS)
        return rc;
    if (r->size == 0) {
        rc = NV(create_ci, gi, r->profile_id, &ci);
        if (rc != NV_SUCCESS) {
            r->call = S_CREATE_CI;
            return rc;
        }
    } else {
        nv_placement_t placement;
        placement.start = r->start;
        placement.size = r->size;
        rc = NV(create_ci_with_placement, gi, r->profile_id, &placement, &ci);
        if (rc != NV_SUCCESS) {
            r->call = S_CREATE_CI_AT;
            return rc;
        }
    }
    r->created = 1; /* as for GPU instances: it exists even if reading it back fails */
    memset(&info, 0, sizeof info);
    rc = NV(ci_get_info, ci, &info);
    if (rc != NV_SUCCESS) {
        r->call = S_CI_INFO;
        return rc;
    }
    r->ci_id = info.id;
    r->start = info.placement.start;
    r->size = info.placement.size;
    return NV_SUCCESS;
}

static nv_return_t destroy_compute_instance(shim_ci_ref_t *r)
{
    nv_gi_t gi;
    nv_ci_t ci;
    nv_return_t rc = gpu_instance_by_id(r->device, r->gi_id, &gi, &r->call);
    if (rc != NV_SUCCESS)
        return rc;
    rc = NV(get_ci_by_id, gi, r->ci_id, &ci);
    if (rc != NV_SUCCESS) {
        r->call = S_CI_BY_ID;
        return rc;
    }
    rc = NV(ci_destroy, ci);
    if (rc != NV_SUCCESS)
        r->call = S_DESTROY_CI;
    return rc;
}

static nv_return_t destroy_gpu_instance(shim_gi_ref_t *r)
{
    nv_gi_t gi;
    nv_return_t rc = gpu_instance_by_id(r->device, r->gi_id, &gi, &r->call);
    if (rc != NV_SUCCESS)
        return rc;
    rc = NV(gi_destroy, gi);
    if (rc != NV_SUCCESS)
        r->call = S_DESTROY_GI;
    return rc;
}

static nv_return_t set_mig_mode(shim_mig_mode_t *r)
{
    nv_device_t dev;
    nv_return_t activation = NV_SUCCESS, rc;
    unsigned int current = 0, pending = 0;

    r->activation_status = NV_SUCCESS;
    r->current_mode = r->pending_mode = 0xFFFFFFFFu; /* unknown until read back */
    rc = NV(device_get_handle_by_index, r->device, &dev);
    if (rc != NV_SUCCESS) {
        r->call = S_HANDLE;
        return rc;
    }
    rc = NV(device_set_mig_mode, dev, r->mode, &activation);
    r->activation_status = activation;
    if (rc != NV_SUCCESS)
        r->call = S_SET_MIG;
    /* Read back even after a failure: the caller needs to know where the GPU stands. */
    if (NV(device_get_mig_mode, dev, &current, &pending) == NV_SUCCESS) {
        r->current_mode = current;
        r->pending_mode = pending;
    }
    return rc;
}

/* The common loop of every bulk change: the read-only check comes before any NVML call;
 * after the first failure with stop_on_error, the rest are marked not attempted. */
#define BULK(reqs, n, stop_on_error, run)                                                      \
    do {                                                                                       \
        unsigned int i_, failed_ = 0;                                                          \
        int refuse_ = shim_read_only();                                                        \
        for (i_ = 0; i_ < (n); i_++) {                                                         \
            (reqs)[i_].call = NULL;                                                            \
            if (refuse_) {                                                                     \
                (reqs)[i_].status = SHIM_STATUS_READ_ONLY;                                     \
            } else if ((stop_on_error) && failed_ > 0) {                                       \
                (reqs)[i_].status = SHIM_STATUS_NOT_ATTEMPTED;                                 \
                failed_++;                                                                     \
            } else {                                                                           \
                (reqs)[i_].status = run(&(reqs)[i_]);                                          \
                if ((reqs)[i_].status != NV_SUCCESS)                                           \
                    failed_++;                                                                 \
            }                                                                                  \
        }                                                                                      \
        return refuse_ ? SHIM_STATUS_READ_ONLY : (int)failed_;                                 \
    } while (0)

int shim_create_gpu_instances(shim_gi_create_t *reqs, unsigned int n, int stop_on_error)
{
    BULK(reqs, n, stop_on_error, create_gpu_instance);
}

int shim_create_compute_instances(shim_ci_create_t *reqs, unsigned int n, int stop_on_error)
{
    BULK(reqs, n, stop_on_error, create_compute_instance);
}

int shim_destroy_compute_instances(shim_ci_ref_t *refs, unsigned int n, int stop_on_error)
{
    BULK(refs, n, stop_on_error, destroy_compute_instance);
}

int shim_destroy_gpu_instances(shim_gi_ref_t *refs, unsigned int n, int stop_on_error)
{
    BULK(refs, n, stop_on_error, destroy_gpu_instance);
}

int shim_set_mig_mode(shim_mig_mode_t *reqs, unsigned int n, int stop_on_error)
{
    BULK(reqs, n, stop_on_error, set_mig_mode);
}
