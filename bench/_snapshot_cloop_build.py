"""Build, at bench time, a tiny C module that walks a node with plain NVML calls.

It is the floor the snapshot benchmark compares migkit against: the NVML calls migkit's shim
makes for a snapshot (identity, MIG mode, every GI profile with its placements, every GI
and CI with the CI profiles of their GI profile, every MIG device with its UUID, memory and
attributes), made from C in a loop, keeping nothing but a checksum. The NVML declarations
are the benchmark's own, written from the project's layout tables.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from types import ModuleType

import cffi

CDEF = """
int cloop_open(const char *path);
long long cloop_walk(unsigned int *calls);
"""

SOURCE = r"""
#include <dlfcn.h>
#include <string.h>

typedef int ret_t;
typedef void *dev_t_;
typedef void *gi_t_;
typedef void *ci_t_;
typedef struct { unsigned int start, size; } placement_t;
typedef struct { char legacy[16]; unsigned int domain, bus, device, id, subsys;
                 char bus_id[32]; } pci_t;
typedef struct { unsigned long long total, free, used; } memory_t;
typedef struct { unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
                 unsigned long long memory; char name[96]; unsigned int caps; } gip_v3_t;
typedef struct { dev_t_ device; unsigned int id, profile; placement_t placement; } gi_info_t;
typedef struct { unsigned int version, id, slices, instances, sm, ce, dec, enc, jpeg, ofa;
                 char name[96]; } cip_v2_t;
typedef struct { dev_t_ device; gi_t_ gi; unsigned int id, profile;
                 placement_t placement; } ci_info_t;
typedef struct { unsigned int sm, ce, dec, enc, jpeg, ofa, gis, cis;
                 unsigned long long memory; } attrs_t;
typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } proc_t;

static ret_t (*count_fn)(unsigned int *);
static ret_t (*handle_fn)(unsigned int, dev_t_ *);
static ret_t (*uuid_fn)(dev_t_, char *, unsigned int);
static ret_t (*name_fn)(dev_t_, char *, unsigned int);
static ret_t (*pci_fn)(dev_t_, pci_t *);
static ret_t (*memory_fn)(dev_t_, memory_t *);
static ret_t (*arch_fn)(dev_t_, unsigned int *);
static ret_t (*mig_mode_fn)(dev_t_, unsigned int *, unsigned int *);
static ret_t (*gip_fn)(dev_t_, unsigned int, void *);
static ret_t (*gi_placements_fn)(dev_t_, unsigned int, placement_t *, unsigned int *);
static ret_t (*gis_fn)(dev_t_, unsigned int, gi_t_ *, unsigned int *);
static ret_t (*gi_info_fn)(gi_t_, gi_info_t *);
static ret_t (*cip_fn)(gi_t_, unsigned int, unsigned int, void *);
static ret_t (*ci_placements_fn)(gi_t_, unsigned int, placement_t *, unsigned int *);
static ret_t (*cis_fn)(gi_t_, unsigned int, ci_t_ *, unsigned int *);
static ret_t (*ci_info_fn)(ci_t_, ci_info_t *);
static ret_t (*max_mig_fn)(dev_t_, unsigned int *);
static ret_t (*mig_handle_fn)(dev_t_, unsigned int, dev_t_ *);
static ret_t (*mig_gi_fn)(dev_t_, unsigned int *);
static ret_t (*mig_ci_fn)(dev_t_, unsigned int *);
static ret_t (*attrs_fn)(dev_t_, attrs_t *);
static ret_t (*procs_fn)(dev_t_, unsigned int *, proc_t *);

#define LOAD(var, name) \
    do { void *p_ = dlsym(h, name); if (!p_) return -1; memcpy(&var, &p_, sizeof p_); } while (0)

int cloop_open(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return -1;
    LOAD(count_fn, "nvmlDeviceGetCount_v2");
    LOAD(handle_fn, "nvmlDeviceGetHandleByIndex_v2");
    LOAD(uuid_fn, "nvmlDeviceGetUUID");
    LOAD(name_fn, "nvmlDeviceGetName");
    LOAD(pci_fn, "nvmlDeviceGetPciInfo_v3");
    LOAD(memory_fn, "nvmlDeviceGetMemoryInfo");
    LOAD(arch_fn, "nvmlDeviceGetArchitecture");
    LOAD(mig_mode_fn, "nvmlDeviceGetMigMode");
    LOAD(gip_fn, "nvmlDeviceGetGpuInstanceProfileInfoV");
    LOAD(gi_placements_fn, "nvmlDeviceGetGpuInstancePossiblePlacements_v2");
    LOAD(gis_fn, "nvmlDeviceGetGpuInstances");
    LOAD(gi_info_fn, "nvmlGpuInstanceGetInfo");
    LOAD(cip_fn, "nvmlGpuInstanceGetComputeInstanceProfileInfoV");
    LOAD(ci_placements_fn, "nvmlGpuInstanceGetComputeInstancePossiblePlacements");
    LOAD(cis_fn, "nvmlGpuInstanceGetComputeInstances");
    LOAD(ci_info_fn, "nvmlComputeInstanceGetInfo_v2");
    LOAD(max_mig_fn, "nvmlDeviceGetMaxMigDeviceCount");
    LOAD(mig_handle_fn, "nvmlDeviceGetMigDeviceHandleByIndex");
    LOAD(mig_gi_fn, "nvmlDeviceGetGpuInstanceId");
    LOAD(mig_ci_fn, "nvmlDeviceGetComputeInstanceId");
    LOAD(attrs_fn, "nvmlDeviceGetAttributes_v2");
    LOAD(procs_fn, "nvmlDeviceGetComputeRunningProcesses_v3");
    return 0;
}

/* The same calls the shim's snapshot makes; the sum keeps the compiler honest. */
long long cloop_walk(unsigned int *calls)
{
    long long sum = 0;
    unsigned int n = 0, d, idx, k, i, j, c, ncalls = 0;
    if (count_fn(&n)) return -1;
    ncalls++;
    for (d = 0; d < n; d++) {
        dev_t_ dev;
        char text[96];
        pci_t pci;
        memory_t memory;
        unsigned int arch, cur, pend, max = 0;
        unsigned int ids[18], instances[18], nprof = 0, seen[18];
        unsigned int cip_gi[64], cip_id[64], cip_inst[64], ncip = 0;
        if (handle_fn(d, &dev)) return -1;
        uuid_fn(dev, text, sizeof text); sum += text[4];
        name_fn(dev, text, sizeof text); sum += text[0];
        pci_fn(dev, &pci); sum += pci.id;
        memory_fn(dev, &memory); sum += (long long)(memory.total >> 20);
        arch_fn(dev, &arch); sum += arch;
        ncalls += 6;
        ncalls++;
        if (mig_mode_fn(dev, &cur, &pend)) continue;
        sum += cur + pend;
        for (idx = 0; idx < 18; idx++) {
            gip_v3_t p;
            placement_t pl[64];
            unsigned int cnt = 0;
            ret_t rc;
            memset(&p, 0, sizeof p);
            p.version = 0x03000098u;
            rc = gip_fn(dev, idx, &p);
            ncalls++;
            if (rc == 3) continue;
            if (rc) break;
            sum += p.id + p.sm + p.memory + p.name[4];
            gi_placements_fn(dev, p.id, NULL, &cnt);
            gi_placements_fn(dev, p.id, pl, &cnt);
            ncalls += 2;
            for (i = 0; i < cnt; i++) sum += pl[i].start;
            seen[nprof] = 0;
            ids[nprof] = p.id;
            instances[nprof++] = p.instances;
        }
        if (cur != 1) continue;
        for (k = 0; k < nprof; k++) {
            gi_t_ gis[32];
            unsigned int cnt = instances[k];
            ncalls++;
            if (gis_fn(dev, ids[k], gis, &cnt)) continue;
            for (i = 0; i < cnt; i++) {
                gi_info_t info;
                gi_info_fn(gis[i], &info);
                ncalls++;
                sum += info.id + info.placement.start;
                if (!seen[k]) {
                    seen[k] = 1;
                    for (idx = 0; idx < 9; idx++) {
                        cip_v2_t cp;
                        placement_t pl[32];
                        unsigned int pc = 0;
                        ret_t rc;
                        memset(&cp, 0, sizeof cp);
                        cp.version = 0x02000088u;
                        rc = cip_fn(gis[i], idx, 0, &cp);
                        ncalls++;
                        if (rc == 3) continue;
                        if (rc) break;
                        sum += cp.id + cp.sm + cp.name[4];
                        ci_placements_fn(gis[i], cp.id, NULL, &pc);
                        ci_placements_fn(gis[i], cp.id, pl, &pc);
                        ncalls += 2;
                        for (j = 0; j < pc; j++) sum += pl[j].start;
                        cip_gi[ncip] = ids[k];
                        cip_id[ncip] = cp.id;
                        cip_inst[ncip++] = cp.instances;
                    }
                }
                for (c = 0; c < ncip; c++) {
                    ci_t_ cis[8];
                    unsigned int cc = cip_inst[c];
                    if (cip_gi[c] != ids[k]) continue;
                    ncalls++;
                    if (cis_fn(gis[i], cip_id[c], cis, &cc)) continue;
                    for (j = 0; j < cc; j++) {
                        ci_info_t ci;
                        ci_info_fn(cis[j], &ci);
                        ncalls++;
                        sum += ci.id + ci.profile + ci.placement.size;
                    }
                }
            }
        }
        max_mig_fn(dev, &max);
        ncalls++;
        for (i = 0; i < max; i++) {
            dev_t_ mig;
            unsigned int gi_id, ci_id;
            attrs_t a;
            ncalls++;
            if (mig_handle_fn(dev, i, &mig)) continue;
            mig_gi_fn(mig, &gi_id);
            mig_ci_fn(mig, &ci_id);
            uuid_fn(mig, text, sizeof text);
            memory_fn(mig, &memory);
            attrs_fn(mig, &a);
            proc_t procs[8];
            unsigned int nprocs = 8;
            procs_fn(mig, &nprocs, procs);
            ncalls += 6;
            sum += gi_id + ci_id + text[4] + (long long)(memory.total >> 20) + a.sm + nprocs;
        }
    }
    *calls = ncalls;
    return sum;
}
"""


def build(tmpdir: str | None = None) -> ModuleType:
    """Compile the C loop into ``tmpdir`` (a fresh temporary directory by default), import it."""
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="migkit-bench-")
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("_snapshot_cloop", SOURCE, libraries=["dl"], extra_compile_args=["-O2"])
    library = ffi.compile(tmpdir=tmpdir, verbose=False)
    spec = importlib.util.spec_from_file_location("_snapshot_cloop", os.fspath(library))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_snapshot_cloop"] = module
    spec.loader.exec_module(module)
    return module
