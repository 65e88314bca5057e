/*
 * migkit's NVML shim: the only C that talks to libnvidia-ml.
 *
 * libnvidia-ml is never linked. shim_load() dlopens it at first use (once per process, under
 * a mutex) and resolves every versioned symbol explicitly; a symbol the library lacks makes
 * only the operations that need it fail, with NVML_ERROR_FUNCTION_NOT_FOUND (13).
 *
 * Every bulk operation is one C call over buffers the caller preallocated, so Python crosses
 * into C once per snapshot or per batch of changes (and cffi releases the GIL around it).
 *
 * Statuses: NVML return codes (0 = success), plus two of our own:
 *   SHIM_STATUS_READ_ONLY      (-1)  refused before any NVML call: MIGKIT_READ_ONLY is set
 *   SHIM_STATUS_NOT_ATTEMPTED  (-2)  an earlier item failed and stop_on_error was set
 *
 * Everything between the CDEF markers is also the cffi cdef, so it is plain declarations with
 * literal array sizes; the SHIM_MAX_* constants name those sizes and the C file checks that
 * they agree.
 */
#ifndef MIGKIT_NVML_SHIM_H
#define MIGKIT_NVML_SHIM_H

/* NVML's return codes, named once for migkit: the value, the name after NVML_ERROR_, and the
 * text nvmlErrorString gives. The shim's lookup table is built from this list, and Python reads
 * the names through shim_return_code_at() / shim_error_name(). */
#define SHIM_NVML_RETURN_CODES(X) \
    X(0, SUCCESS, "Success") \
    X(1, UNINITIALIZED, "Uninitialized") \
    X(2, INVALID_ARGUMENT, "Invalid Argument") \
    X(3, NOT_SUPPORTED, "Not Supported") \
    X(4, NO_PERMISSION, "Insufficient Permissions") \
    X(5, ALREADY_INITIALIZED, "Already Initialized") \
    X(6, NOT_FOUND, "Not Found") \
    X(7, INSUFFICIENT_SIZE, "Insufficient Size") \
    X(8, INSUFFICIENT_POWER, "Insufficient External Power") \
    X(9, DRIVER_NOT_LOADED, "Driver Not Loaded") \
    X(10, TIMEOUT, "Timeout") \
    X(11, IRQ_ISSUE, "Interrupt Request Issue") \
    X(12, LIBRARY_NOT_FOUND, "NVML Shared Library Not Found") \
    X(13, FUNCTION_NOT_FOUND, "Function Not Found") \
    X(14, CORRUPTED_INFOROM, "Corrupted infoROM") \
    X(15, GPU_IS_LOST, "GPU is lost") \
    X(16, RESET_REQUIRED, "GPU requires restart") \
    X(17, OPERATING_SYSTEM, "The operating system has blocked the request") \
    X(18, LIB_RM_VERSION_MISMATCH, "RM has detected an NVML/RM version mismatch") \
    X(19, IN_USE, "In use by another client") \
    X(20, MEMORY, "Insufficient Memory") \
    X(21, NO_DATA, "No data") \
    X(22, VGPU_ECC_NOT_SUPPORTED, "The requested vgpu operation is not available on target device, because ECC is enabled") \
    X(23, INSUFFICIENT_RESOURCES, "Insufficient Resources") \
    X(24, FREQ_NOT_SUPPORTED, "Frequency not supported") \
    X(25, ARGUMENT_VERSION_MISMATCH, "Argument version mismatch") \
    X(26, DEPRECATED, "Function deprecated") \
    X(27, NOT_READY, "System is not ready") \
    X(28, GPU_NOT_FOUND, "GPU not found") \
    X(29, INVALID_STATE, "Invalid state") \
    X(30, RESET_TYPE_NOT_SUPPORTED, "Reset type not supported") \
    X(999, UNKNOWN, "Unknown Error")


/* CDEF-BEGIN */
#define SHIM_ABI_VERSION 3 /* 3: failed-read lines, kept tables, snapshot flags, created */

#define SHIM_STATUS_READ_ONLY -1
#define SHIM_STATUS_NOT_ATTEMPTED -2
#define SHIM_LOAD_FAILED -1
#define SHIM_LOAD_ALREADY -2

/* Documented limits of the snapshot buffers (real parts stay far below them). */
#define SHIM_MAX_DEVICES 64          /* physical GPUs per node */
#define SHIM_MAX_GI_PROFILES 18      /* NVML GPU-instance profile indices 0x0..0x11 */
#define SHIM_MAX_GI_PLACEMENTS 16    /* possible placements of one GI profile */
#define SHIM_MAX_CI_PROFILE_INDICES 9 /* NVML compute-instance profile indices 0x0..0x8 */
#define SHIM_MAX_CI_PROFILES 36      /* CI profiles per GPU, over all GI profiles with a live GI */
#define SHIM_MAX_CI_PLACEMENTS 8     /* possible placements of one CI profile */
#define SHIM_MAX_GIS 32              /* GPU instances per GPU */
#define SHIM_MAX_CIS_PER_GI 8        /* compute instances per GPU instance */
#define SHIM_MAX_CIS 32              /* compute instances per GPU */
#define SHIM_MAX_PIDS 8              /* PIDs kept per compute instance (the count is exact) */
#define SHIM_NAME_LEN 96
#define SHIM_UUID_LEN 96
#define SHIM_BUS_ID_LEN 32
#define SHIM_CALL_LEN 64
#define SHIM_MAX_UNKNOWN 16          /* failed reads kept per GPU (unknown_count stays exact) */
#define SHIM_UNKNOWN_LEN 160

/* Bits of shim_device_t.truncated: which limit cut the snapshot short. */
#define SHIM_TRUNC_GI_PLACEMENTS 1
#define SHIM_TRUNC_CI_PROFILES 2
#define SHIM_TRUNC_CI_PLACEMENTS 4
#define SHIM_TRUNC_GIS 8
#define SHIM_TRUNC_CIS 16

typedef struct {
    unsigned int start;
    unsigned int size;
} shim_placement_t;

/* One GPU-instance profile (one row of `nvidia-smi mig -lgip`, plus its -lgipp placements). */
typedef struct {
    unsigned int index;           /* NVML profile index, 0x0..0x11 */
    unsigned int id;              /* NVML profile ID (19 for 1g.10gb on H100) */
    unsigned int info_version;    /* struct version NVML answered with: 3, 2 or 1 */
    unsigned int p2p;             /* isP2pSupported (v1/v2 structs only) */
    unsigned int slice_count;     /* compute slices */
    unsigned int instance_count;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned int capabilities;    /* v3 only */
    unsigned int placement_count;
    unsigned long long memory_mib;
    shim_placement_t placements[16];
    char name[96];                /* NVML's name, "MIG 1g.10gb"; empty from a v1 struct */
} shim_gi_profile_t;

/* One compute-instance profile available in GIs of one GI profile (engine profile shared). */
typedef struct {
    unsigned int gi_profile_id;
    unsigned int index;           /* NVML CI profile index */
    unsigned int id;              /* NVML CI profile ID */
    unsigned int slice_count;
    unsigned int instance_count;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned int placement_count;
    shim_placement_t placements[8];
    char name[96];
} shim_ci_profile_t;

/* A live GPU instance; its compute instances are cis[first_ci .. first_ci + ci_count). */
typedef struct {
    unsigned int id;
    unsigned int profile_id;
    unsigned int start;           /* memory slices */
    unsigned int size;
    unsigned int first_ci;
    unsigned int ci_count;
} shim_gi_t;

/* A live compute instance, with what its MIG device reports when one was found. The process
 * fields come from nvmlDeviceGetComputeRunningProcesses_v3 on the MIG device:
 * process_status is its return code (0, or 7 when more processes ran than pids[] holds, both
 * with process_count exact; 13 when the library lacks the call), pids[] the first of them. */
typedef struct {
    unsigned int gi_id;
    unsigned int id;
    unsigned int profile_id;
    unsigned int start;           /* compute slices inside the GI */
    unsigned int size;
    unsigned int has_mig_device;
    unsigned int multiprocessors;
    unsigned int copy_engines;
    unsigned int decoders;
    unsigned int encoders;
    unsigned int jpegs;
    unsigned int ofas;
    unsigned int gi_slice_count;
    unsigned int ci_slice_count;
    unsigned long long memory_mib;
    char uuid[96];                /* "MIG-..." */
    int process_status;
    unsigned int process_count;
    unsigned int pids[8];
} shim_ci_t;

/* One physical GPU. `status` / `failed_call` name the first failed read that leaves the whole
 * GPU unreadable (its handle, identity or MIG mode); any other failed read is a line in
 * unknown[] and the snapshot goes on. */
typedef struct {
    unsigned int index;           /* NVML index */
    int status;                   /* first failing NVML call's code, 0 if none failed */
    unsigned int pci_device_id;
    unsigned int pci_subsystem_id;
    unsigned int architecture;
    unsigned int mig_capable;
    unsigned int mig_mode;        /* current */
    unsigned int pending_mig_mode;
    unsigned int max_mig_devices;
    unsigned int profile_count;
    unsigned int ci_profile_count;
    unsigned int gi_count;
    unsigned int ci_count;
    unsigned int mig_device_count;
    unsigned int truncated;       /* SHIM_TRUNC_* bits */
    unsigned int tables_skipped;  /* 1: MIG off and SHIM_SNAP_TABLES_IF_NEEDED: no profiles read */
    unsigned long long memory_total;  /* bytes */
    char failed_call[64];         /* name of the first failing NVML call, "" if none */
    char uuid[96];
    char name[96];
    char bus_id[32];
    /* Reads that failed and left a fact unknown, one line each: the NVML call, what it was
     * for, and the error ("nvmlDeviceGetComputeRunningProcesses_v3 (in-use state of GPU
     * instance 3, compute instance 0): NOT_SUPPORTED"). unknown_count counts them all, the
     * first SHIM_MAX_UNKNOWN are kept. */
    unsigned int unknown_count;
    unsigned int reserved2;
    char unknown[16][160];
    shim_gi_profile_t profiles[18];
    shim_ci_profile_t ci_profiles[36];
    shim_gi_t gis[32];
    shim_ci_t cis[32];
} shim_device_t;

/* Requests of the bulk mutating operations. `device` is the NVML index of the GPU; `status`,
 * `call` (the NVML function that failed, NULL on success) and the created ids are outputs. */
typedef struct {
    unsigned int device;
    unsigned int profile_id;      /* GI profile ID */
    unsigned int start;           /* explicit placement, memory slices */
    unsigned int size;
    int status;
    unsigned int gi_id;           /* out */
    unsigned int created;         /* out: 1 once NVML created it, even if reading it back failed */
    const char *call;             /* out */
} shim_gi_create_t;

typedef struct {
    unsigned int device;
    unsigned int gi_id;
    unsigned int profile_id;      /* CI profile ID */
    unsigned int start;           /* compute slices inside the GI; size 0 = driver's choice */
    unsigned int size;
    int status;
    unsigned int ci_id;           /* out */
    unsigned int created;         /* out: 1 once NVML created it, even if reading it back failed */
    const char *call;             /* out */
} shim_ci_create_t;

typedef struct {
    unsigned int device;
    unsigned int gi_id;
    int status;
    unsigned int reserved;
    const char *call;
} shim_gi_ref_t;

typedef struct {
    unsigned int device;
    unsigned int gi_id;
    unsigned int ci_id;
    int status;
    const char *call;
} shim_ci_ref_t;

typedef struct {
    unsigned int device;
    unsigned int mode;            /* 0 disable, 1 enable */
    int status;                   /* return code of nvmlDeviceSetMigMode */
    int activation_status;        /* its separate activation status */
    unsigned int current_mode;    /* read back afterwards */
    unsigned int pending_mode;
    const char *call;
} shim_mig_mode_t;

int shim_abi_version(void);

/* Open the first of `paths` that dlopen accepts. Returns the index of the path opened; -1 when
 * none could be opened (errbuf then holds one "path: dlerror" line per path tried); -2 when a
 * library was already open in this process (nothing is done: it stays the one in use). */
int shim_load(const char *const *paths, unsigned int n, char *errbuf, unsigned int errlen);
int shim_is_loaded(void);
/* Where the loaded library lives (dladdr of nvmlInit), "" if none is loaded. */
int shim_library_path(char *buf, unsigned int len);
/* 1 if the loaded library exports `name` (dlsym), else 0. */
int shim_has_symbol(const char *name);

int shim_init(void);
int shim_shutdown(void);
const char *shim_error_string(int code);
/* The name of an NVML return code ("INSUFFICIENT_RESOURCES"), NULL for a code NVML does not
 * define (shim_error_text likewise); shim_return_code_at(i) is the i-th code NVML defines, -1
 * past the last. */
const char *shim_error_name(int code);
const char *shim_error_text(int code); /* the text from the list above, whatever is loaded */
int shim_return_code_at(unsigned int i);
int shim_read_only(void);
int shim_device_count(unsigned int *count);

/* Fill out[0 .. min(count, capacity)) and set *count to the number of GPUs. Returns the code of
 * the device count call (per-GPU failures are in each shim_device_t's status / failed_call), or
 * NVML_ERROR_INSUFFICIENT_SIZE (7) when there are more GPUs than capacity.
 *
 * A GPU's identity and profile tables are read once and kept while its UUID and MIG mode stay
 * the same and NVML stays initialised (the UUID and the mode are read every time). With
 * SHIM_SNAP_TABLES_IF_NEEDED in flags, a GPU with MIG off gets no profiles unless they are
 * kept already: what a question about modes alone needs. */
#define SHIM_SNAP_TABLES_IF_NEEDED 1
int shim_snapshot(shim_device_t *out, unsigned int capacity, unsigned int *count,
                  unsigned int flags);
/* Drop what is kept for GPU `index` (-1: every GPU), so that the next snapshot reads it all. */
void shim_forget_tables(int index);

/* same[i] = 1 when GPU i's records in `a` and `b` (two snapshots) are identical, else 0: the
 * shim writes every record the same way for the same state, so this tells the caller which
 * GPUs changed without comparing the (mostly unused) fixed-size arrays. */
void shim_same_devices(const shim_device_t *a, const shim_device_t *b, unsigned int n,
                       unsigned char *same);

/* Each returns the number of items that did not succeed, or SHIM_STATUS_READ_ONLY when the
 * whole batch was refused. */
int shim_create_gpu_instances(shim_gi_create_t *reqs, unsigned int n, int stop_on_error);
int shim_create_compute_instances(shim_ci_create_t *reqs, unsigned int n, int stop_on_error);
int shim_destroy_compute_instances(shim_ci_ref_t *refs, unsigned int n, int stop_on_error);
int shim_destroy_gpu_instances(shim_gi_ref_t *refs, unsigned int n, int stop_on_error);
int shim_set_mig_mode(shim_mig_mode_t *reqs, unsigned int n, int stop_on_error);
/* CDEF-END */

#endif
