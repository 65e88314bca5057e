/*
 * The time NVML calls take: MIGKIT_SIM_LATENCY_MS (slept before each mutating call) and the
 * named per-function profiles of MIGKIT_SIM_LATENCY (e.g. hopper-580), built from the medians
 * measured on a real H100 and H200 with driver 580.159.04 (tests/data/real/).
 *
 * With a profile, every call sleeps its function's cost; calls about one GPU hold that GPU's
 * lock while they sleep, so they do not overlap (the captured per-call time stayed the same
 * with 1, 2, 4 and 8 threads on one GPU); calls on different GPUs and calls about no GPU
 * overlap. The time charged is added up per function and written to the state file with the
 * call counts (`charged` records, microseconds). docs/simulator.md has the table.
 */
#include "sim.h"

#define US(x) ((uint32_t)((x) * 1000.0))

/* Costs the table cannot hold: they depend on the answer, or on the process's history. */
#define GIP_INFO_SUPPORTED_NS US(505)   /* profile info, a profile this GPU has */
#define GIP_INFO_UNSUPPORTED_NS US(160) /* ... an index this GPU lacks (NOT_SUPPORTED) */
#define GIP_INFO_PAST_END_NS US(4.5)    /* ... past the last index (INVALID_ARGUMENT) */
#define GIP_BY_ID_NS US(320)            /* profile info by ID, 290-350 us */
#define GIP_BY_ID_UNKNOWN_NS US(135)    /* ... an ID this GPU lacks (INVALID_ARGUMENT) */
#define INIT_FIRST_NS 14904000ULL       /* the first nvmlInit in a process */
#define INIT_AGAIN_NS 2571000ULL        /* a later one, after a full shutdown */
#define SHUTDOWN_NS 9652000ULL          /* the shutdown that closes NVML */

/*
 * hopper-580, in ns. Captured: identity reads, MIG mode, profile info, placements, capacity,
 * GI list, max MIG devices, MIG device by index, processes, attributes, NVML version.
 * Assumed (not captured; reads only, MIG disabled): other version strings and GPU numbers
 * cost what the captured identity reads cost (answered from the library's cache, 2 us); GI by
 * id costs what the GI list costs; instance info and MIG-device ids cost 10 us (they read the
 * handle); CI profile reads, CI lists, CI capacity and placements cost their GI
 * counterparts. Mutating calls cost 0 here: MIGKIT_SIM_LATENCY_MS is added to them.
 */
static const uint32_t g_hopper_580_ns[FN_COUNT] = {
    [FN_nvmlSystemGetDriverVersion] = US(2.9),
    [FN_nvmlSystemGetNVMLVersion] = US(2.9),
    [FN_nvmlSystemGetCudaDriverVersion] = US(2.9),
    [FN_nvmlSystemGetCudaDriverVersion_v2] = US(2.9),
    [FN_nvmlDeviceGetCount] = US(1.4),
    [FN_nvmlDeviceGetCount_v2] = US(1.4),
    [FN_nvmlDeviceGetHandleByIndex] = US(1.7),
    [FN_nvmlDeviceGetHandleByIndex_v2] = US(1.7),
    [FN_nvmlDeviceGetHandleByUUID] = US(3.0),
    [FN_nvmlDeviceGetHandleByPciBusId] = US(4.1),
    [FN_nvmlDeviceGetHandleByPciBusId_v2] = US(4.1),
    [FN_nvmlDeviceGetPciInfo] = US(2.2),
    [FN_nvmlDeviceGetPciInfo_v2] = US(2.2),
    [FN_nvmlDeviceGetPciInfo_v3] = US(2.2),
    [FN_nvmlDeviceGetMinorNumber] = US(2),
    [FN_nvmlDeviceGetIndex] = US(2),
    [FN_nvmlDeviceGetName] = US(3.0),
    [FN_nvmlDeviceGetUUID] = US(3.0),
    [FN_nvmlDeviceGetArchitecture] = US(1.9),
    [FN_nvmlDeviceGetMemoryInfo] = US(9.1),
    [FN_nvmlDeviceGetMemoryInfo_v2] = US(9.1),
    [FN_nvmlDeviceGetAttributes] = US(3.5),
    [FN_nvmlDeviceGetAttributes_v2] = US(3.5),
    [FN_nvmlDeviceGetMigMode] = US(160),
    [FN_nvmlDeviceGetGpuInstancePossiblePlacements] = US(200),
    [FN_nvmlDeviceGetGpuInstancePossiblePlacements_v2] = US(200),
    [FN_nvmlDeviceGetGpuInstanceRemainingCapacity] = US(185),
    [FN_nvmlDeviceGetGpuInstances] = US(280),
    [FN_nvmlDeviceGetGpuInstanceById] = US(280),
    [FN_nvmlGpuInstanceGetInfo] = US(10),
    [FN_nvmlGpuInstanceGetComputeInstanceProfileInfo] = US(505),
    [FN_nvmlGpuInstanceGetComputeInstanceProfileInfoV] = US(505),
    [FN_nvmlGpuInstanceGetComputeInstanceRemainingCapacity] = US(185),
    [FN_nvmlGpuInstanceGetComputeInstancePossiblePlacements] = US(200),
    [FN_nvmlGpuInstanceGetComputeInstances] = US(280),
    [FN_nvmlGpuInstanceGetComputeInstanceById] = US(280),
    [FN_nvmlComputeInstanceGetInfo] = US(10),
    [FN_nvmlComputeInstanceGetInfo_v2] = US(10),
    [FN_nvmlDeviceIsMigDeviceHandle] = US(1.7),
    [FN_nvmlDeviceGetGpuInstanceId] = US(10),
    [FN_nvmlDeviceGetComputeInstanceId] = US(10),
    [FN_nvmlDeviceGetMaxMigDeviceCount] = US(135),
    [FN_nvmlDeviceGetMigDeviceHandleByIndex] = US(10),
    [FN_nvmlDeviceGetDeviceHandleFromMigDeviceHandle] = US(10),
    [FN_nvmlDeviceGetComputeRunningProcesses] = US(10),
    [FN_nvmlDeviceGetComputeRunningProcesses_v2] = US(10),
    [FN_nvmlDeviceGetComputeRunningProcesses_v3] = US(10),
};

static const struct {
    const char *name;
    const uint32_t *ns;
} g_profiles[] = {
    {"hopper-580", g_hopper_580_ns},
};

static const uint32_t *g_profile;      /* NULL: no profile */
static uint64_t g_mutating_ns;         /* MIGKIT_SIM_LATENCY_MS */
static uint64_t g_charged_ns[FN_COUNT]; /* not yet merged into the file */
static int g_ever_initialized;         /* under the state mutex */
static pthread_mutex_t g_gpu_busy[MAX_GPUS] = {[0 ... MAX_GPUS - 1] = PTHREAD_MUTEX_INITIALIZER};

static int parse_milliseconds(const char *s, uint64_t *ns)
{
    *ns = 0;
    if (s == NULL || *s == '\0')
        return 0;
    char *endp;
    errno = 0;
    double ms = strtod(s, &endp);
    if (errno != 0 || *endp != '\0' || !(ms >= 0.0) || ms > 3600e3)
        return -1;
    *ns = (uint64_t)(ms * 1e6);
    return 0;
}

/* Read MIGKIT_SIM_LATENCY_MS and MIGKIT_SIM_LATENCY; -1 on a bad value or unknown name. */
int latency_configure(void)
{
    if (parse_milliseconds(getenv("MIGKIT_SIM_LATENCY_MS"), &g_mutating_ns) != 0) {
        sim_debug("bad MIGKIT_SIM_LATENCY_MS");
        return -1;
    }
    const char *name = getenv("MIGKIT_SIM_LATENCY");
    g_profile = NULL;
    if (name == NULL || *name == '\0')
        return 0;
    for (size_t i = 0; i < sizeof g_profiles / sizeof g_profiles[0]; i++) {
        if (strcmp(g_profiles[i].name, name) == 0) {
            g_profile = g_profiles[i].ns;
            return 0;
        }
    }
    sim_debug("unknown MIGKIT_SIM_LATENCY profile '%s'", name);
    return -1;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec left = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while ((left.tv_sec != 0 || left.tv_nsec != 0) && nanosleep(&left, &left) != 0 &&
           errno == EINTR)
        ;
}

/* Sleep `ns` for fn (holding the GPU's lock when the call is about one GPU) and add it up. */
static void charge(enum sim_fn fn, const void *handle, uint64_t ns)
{
    if (ns == 0)
        return;
    int gpu = handle != NULL ? gpu_index_of_handle(handle) : -1;
    if (gpu >= 0 && pthread_mutex_lock(&g_gpu_busy[gpu]) != 0)
        gpu = -1;
    sleep_ns(ns);
    if (gpu >= 0)
        pthread_mutex_unlock(&g_gpu_busy[gpu]);
    __atomic_fetch_add(&g_charged_ns[fn], ns, __ATOMIC_RELAXED);
}

/* The table's cost of fn; mutating calls add MIGKIT_SIM_LATENCY_MS. */
void latency_charge(enum sim_fn fn, const void *handle, int mutating)
{
    uint64_t ns = g_profile != NULL ? g_profile[fn] : 0;
    if (mutating && g_profile == NULL) {
        /* No profile: the plain MIGKIT_SIM_LATENCY_MS sleep, on no lock, so threads overlap. */
        sleep_ns(g_mutating_ns);
        return;
    }
    if (mutating)
        ns += g_mutating_ns;
    charge(fn, handle, ns);
}

/* Profile info by index or by ID: the cost depends on the answer. */
void latency_charge_profile_info(enum sim_fn fn, const void *handle, enum sim_rc rc)
{
    if (g_profile == NULL)
        return;
    uint64_t ns;
    if (fn == FN_nvmlDeviceGetGpuInstanceProfileInfoByIdV)
        ns = rc == RC_SUCCESS ? GIP_BY_ID_NS : GIP_BY_ID_UNKNOWN_NS;
    else if (rc == RC_SUCCESS)
        ns = GIP_INFO_SUPPORTED_NS;
    else if (rc == RC_NOT_SUPPORTED)
        ns = GIP_INFO_UNSUPPORTED_NS;
    else
        ns = GIP_INFO_PAST_END_NS;
    charge(fn, handle, ns);
}

/* nvmlInit that opened NVML (first_open) or nvmlShutdown that closed it; caller holds the
 * state mutex for the bookkeeping, the sleep happens in latency_settle. */
uint64_t latency_lifecycle_cost(enum sim_fn fn)
{
    if (g_profile == NULL)
        return 0;
    if (fn == FN_nvmlShutdown)
        return SHUTDOWN_NS;
    uint64_t ns = g_ever_initialized ? INIT_AGAIN_NS : INIT_FIRST_NS;
    g_ever_initialized = 1;
    return ns;
}

void latency_settle(enum sim_fn fn, uint64_t ns)
{
    charge(fn, NULL, ns);
}

/* Charged time of fn not yet merged into the file, in ns; zeroes it. */
uint64_t latency_take_charged(enum sim_fn fn)
{
    return __atomic_exchange_n(&g_charged_ns[fn], 0, __ATOMIC_RELAXED);
}

int latency_have_charged(void)
{
    for (int fn = 0; fn < FN_COUNT; fn++)
        if (__atomic_load_n(&g_charged_ns[fn], __ATOMIC_RELAXED))
            return 1;
    return 0;
}

/* In a forked child: the charges belong to the parent, and a GPU lock held by another
 * thread of the parent at the fork would never be released. */
void latency_after_fork(void)
{
    memset(g_charged_ns, 0, sizeof g_charged_ns);
    for (int i = 0; i < MAX_GPUS; i++)
        if (pthread_mutex_init(&g_gpu_busy[i], NULL) != 0)
            sim_debug("pthread_mutex_init failed");
}
