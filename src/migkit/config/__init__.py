"""The configuration files of mig-parted (v1): parsing, selection and the device-filter syntax.

Pure: imports ``errors``, ``models`` and the profile-name grammar (``migkit.names``) only;
never ``nvml``, ``apply`` or the simulator.
"""

from migkit.config.filters import DeviceFilter, filters_match, parse_go_uint32
from migkit.config.parse import load_config, parse_config, select
from migkit.config.values import ConfigEntry, ConfigWarning, MigConfigFile, SelectedConfig
from migkit.config.writer import dump_json, dump_yaml

__all__ = [
    "ConfigEntry",
    "ConfigWarning",
    "DeviceFilter",
    "MigConfigFile",
    "SelectedConfig",
    "dump_json",
    "dump_yaml",
    "filters_match",
    "load_config",
    "parse_config",
    "parse_go_uint32",
    "select",
]
