#include "_nvml_shim.h"
int shim_version(void) { return 1; }
