/* placeholder: replaced by the shim implementation */
#ifndef MIGKIT_NVML_SHIM_H
#define MIGKIT_NVML_SHIM_H
/* CDEF-BEGIN */
int shim_version(void);
/* CDEF-END */
#endif
