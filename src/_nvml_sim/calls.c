/* Every call's entry: init and shutdown, counting, injected faults, latency, the locks. */
#include "sim.h"

/* ------------------------------------------------------------------ return codes */


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


#define SIM_FN_NAME(name) #name,
static const char *const g_fn_names[FN_COUNT] = {SIM_FUNCTIONS(SIM_FN_NAME, SIM_FN_NAME)};
#undef SIM_FN_NAME

/* ------------------------------------------------------------------ process state */

static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static unsigned int g_init_count; /* read without the mutex through __atomic loads */

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
static int g_debug;

void sim_debug(const char *fmt, ...)
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

/* Every call first takes its time (latency.c), holding no state lock, then is counted. */
enum sim_rc enter(enum sim_fn fn, const void *handle)
{
    if (!initialized())
        return RC_UNINITIALIZED;
    latency_charge(fn, handle, 0);
    return count_call(fn);
}

enum sim_rc enter_mutating(enum sim_fn fn, const void *handle)
{
    if (!initialized())
        return RC_UNINITIALIZED;
    latency_charge(fn, handle, 1);
    return count_call(fn);
}

/* ------------------------------------------------------------------ call counts */

/* Move this process's call counts into the state that is about to be written. */
static void merge_counts(void)
{
    for (int fn = 0; fn < FN_COUNT; fn++) {
        uint64_t n = __atomic_exchange_n(&g_unflushed[fn], 0, __ATOMIC_RELAXED);
        uint64_t ns = latency_take_charged((enum sim_fn)fn);
        if ((n || ns) &&
            add_call_totals(g_cur, g_fn_names[fn], strlen(g_fn_names[fn]), n, ns) != 0)
            sim_debug("call table full; dropping %s", g_fn_names[fn]);
    }
}

static int have_unflushed(void)
{
    for (int fn = 0; fn < FN_COUNT; fn++)
        if (__atomic_load_n(&g_unflushed[fn], __ATOMIC_RELAXED))
            return 1;
    return latency_have_charged();
}

/* Shutdown / exit: merge pending counts into the file, if the node still exists. */
static void flush_counts(void)
{
    if (!have_unflushed() || !state_file_exists())
        return;
    if (lock_file() != 0)
        return;
    if (state_file_refresh() == 0) {
        merge_counts();
        if (state_file_write() != 0)
            sim_debug("cannot flush call counts");
    }
    unlock_file();
}

/* Read-only section: the mutex, and a freshness check at most once per ms. */
enum sim_rc read_begin(void)
{
    lock_state();
    if (g_init_count == 0) {
        unlock_state();
        return RC_UNINITIALIZED;
    }
    state_file_refresh_for_read();
    return RC_SUCCESS;
}

enum sim_rc read_end(enum sim_rc rc)
{
    unlock_state();
    return rc;
}

/* Mutating section: the mutex, the file lock, and always an up-to-date state. */
enum sim_rc write_begin(void)
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
    if (state_file_refresh() != 0) {
        unlock_file();
        unlock_state();
        return RC_UNKNOWN;
    }
    return RC_SUCCESS;
}

/* Write the state (and the call counts, also after a refused request), then unlock. */
enum sim_rc write_end(enum sim_rc rc)
{
    merge_counts();
    if (state_file_write() != 0) {
        rc = RC_UNKNOWN;
        if (state_file_reload() != 0) /* drop the change that could not be stored */
            sim_debug("cannot reload the state file");
    }
    unlock_file();
    unlock_state();
    return rc;
}


/* ------------------------------------------------------------------ init and shutdown */

static enum sim_rc open_node(void)
{
    const char *path = getenv("MIGKIT_SIM_STATE");
    const char *debug = getenv("MIGKIT_SIM_DEBUG");
    g_debug = debug != NULL && strcmp(debug, "1") == 0;
    state_file_clear_error();
    if (path == NULL || path[0] == '\0' || strlen(path) >= PATH_LEN) {
        sim_debug("MIGKIT_SIM_STATE is not set");
        return RC_DRIVER_NOT_LOADED;
    }
    if (parse_faults(getenv("MIGKIT_SIM_FAULTS")) != 0) {
        sim_debug("bad MIGKIT_SIM_FAULTS");
        return RC_UNKNOWN;
    }
    if (latency_configure() != 0)
        return RC_UNKNOWN;
    if (state_file_open(path) != 0)
        return RC_DRIVER_NOT_LOADED;
    init_gpu_handles();
    memset(g_since_init, 0, sizeof g_since_init);
    return RC_SUCCESS;
}

static enum sim_rc init_common(enum sim_fn fn)
{
    uint64_t cost = 0;
    lock_state();
    if (g_init_count == 0) {
        enum sim_rc rc = open_node();
        if (rc != RC_SUCCESS) {
            unlock_state();
            return rc;
        }
    }
    enum sim_rc rc = count_call(fn);
    if (rc == RC_SUCCESS) {
        if (g_init_count == 0)
            cost = latency_lifecycle_cost(fn);
        __atomic_store_n(&g_init_count, g_init_count + 1, __ATOMIC_RELEASE);
    }
    unlock_state();
    latency_settle(fn, cost); /* the driver's own start-up, once NVML is open */
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
    if (g_init_count == 0) { /* more shutdowns than inits: SUCCESS, as the driver */
        unlock_state();
        return RC_SUCCESS;
    }
    enum sim_rc rc = count_call(FN_nvmlShutdown);
    if (rc == RC_SUCCESS) {
        __atomic_store_n(&g_init_count, g_init_count - 1, __ATOMIC_RELEASE);
        if (g_init_count == 0) {
            latency_settle(FN_nvmlShutdown, latency_lifecycle_cost(FN_nvmlShutdown));
            flush_counts();
        }
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
    latency_after_fork();
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

/* ------------------------------------------------------------------ state file errors */

/*
 * migkit's own entry point (not NVML): why the simulator could not use its state file at the
 * last try — at nvmlInit, or at a later freshness check, after which read calls keep
 * answering from the last good state. Returns 1 with the reason (NUL-terminated, cut to
 * `cap`) and the 1-based line (0: the file as a whole), or 0 when the file in use is current.
 */
SIM_EXPORT int migkitSimLastError(char *reason, unsigned int cap, unsigned int *line)
{
    lock_state();
    int rc = state_file_last_error(reason, cap, line);
    unlock_state();
    return rc;
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

