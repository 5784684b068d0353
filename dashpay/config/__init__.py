"""dashpay configuration: one TOML file, validated in full at load, as frozen dataclasses.

One module per job; import from the module, not from the package (this file stays
empty so that, say, ``dashpay.config.durations`` loads without the whole schema):

- ``errors``: ConfigError, the one exception.
- ``text``: values in messages (quoted, typed, passwords hidden).
- ``durations``: parse_duration / format_duration.
- ``keys``: CONFIG_KEYS, the table of every key, its checks, and Reader.
- ``files``: which file (resolve_config_path) and reading its TOML.
- ``control``: [control] alone (load_control_config), what the CLI needs.
- ``database``: database URLs and DatabaseConfig.
- ``secrets``: credential files and $CREDENTIALS_DIRECTORY (OfflineCheck: config check).
- ``unit``: the systemd unit's User= and credentials; can the service read a file.
- ``model``: the other dataclasses and the [callbacks] target rules.
- ``load``: load_config / config_from_dict / default_config / config_warnings.
- ``paths``: where things live when no config says otherwise.

Stdlib only at import time: the CLI reads the config on every command and must start
fast.
"""
