"""The settings sources of the configuration: the TOML file, the `MQIM_*` environment, the flags.

`load_config` (`mqim/cli/_config.py`) hands them to `MqimConfig`, whose settings machinery
(pydantic-settings) merges them by priority. Each source also lists its values as leaves with
their origin (`mqim/cli/_origins.py`), for the error messages.
"""

from __future__ import annotations

import errno
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import EnvSettingsSource, InitSettingsSource, TomlConfigSettingsSource

from mqim.cli._exceptions import ConfigError
from mqim.cli._origins import Leaf

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from pydantic_settings import BaseSettings


class FlagSource(InitSettingsSource):
    """Values from command-line flags, by dotted key (`{"server.port": 1884}`).

    Args:
        settings_cls: The settings model.
        overrides: The flags' values; None values (flags not given) are left out.
    """

    def __init__(self, settings_cls: type[BaseSettings], *, overrides: Mapping[str, Any]) -> None:
        self._leaves: list[Leaf] = [
            (tuple(dotted.split(".")), value, "command line")
            for dotted, value in overrides.items()
            if value is not None
        ]
        super().__init__(settings_cls, init_kwargs=_nest(self._leaves))

    def leaves(self) -> list[Leaf]:
        """The flags given, with their key paths."""
        return list(self._leaves)


class EnvSource(EnvSettingsSource):
    """`MQIM_<SECTION>__<KEY>` variables (nested tables add `__<KEY>` levels, names are not
    case-sensitive after the prefix); an empty value means "not set" (None).

    The prefix and the level separator are the settings model's `env_prefix` and
    `env_nested_delimiter`. Only names with a level separator are configuration (`MQIM_CONFIG`,
    `MQIM_PASSWORD` are not), and a section that is no field of the model is kept, so that it is
    refused as an unknown key like a file's would be.

    Args:
        settings_cls: The settings model.
        environ: The environment to read.

    Raises:
        ConfigError: A variable has an empty level (`MQIM_SERVER____PORT`).
    """

    def __init__(self, settings_cls: type[BaseSettings], *, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._found: dict[tuple[str, ...], tuple[str, str | None]] = {}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # pydantic-settings' hook for the variables to read (its default reads os.environ).
        prefix, separator = self.env_prefix, self.env_nested_delimiter or ""
        selected: dict[str, str | None] = {}
        for name, raw in self._environ.items():
            if not name.startswith(prefix) or not separator or separator not in name:
                continue
            levels = tuple(level.lower() for level in name[len(prefix) :].split(separator))
            if any(not level for level in levels):
                raise ConfigError(f"malformed configuration variable {name}: empty level")
            value = raw if raw != "" else None
            self._found[levels] = (name, value)
            # Spelled as the source looks names up (`MQIM_server__port`): the model is
            # case-sensitive so that a file's `[SERVER]` stays an unknown key.
            selected[prefix + separator.join(levels)] = value
        return selected

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        fields = self.settings_cls.model_fields
        unknown = [
            (levels, value, name) for levels, (name, value) in self._found.items() if levels[0] not in fields
        ]
        for section, values in _nest(unknown).items():
            data[section] = values
        return data

    def leaves(self) -> list[Leaf]:
        """The configuration variables, with their key paths."""
        return [(levels, value, f"env {name}") for levels, (name, value) in self._found.items()]


class TomlSource(TomlConfigSettingsSource):
    """The TOML configuration file (`--config`); unlike the library's default, a missing file is
    an error, not an empty source.

    Args:
        settings_cls: The settings model.
        path: The file.

    Raises:
        ConfigError: The file is missing, unreadable or not TOML.
    """

    def __init__(self, settings_cls: type[BaseSettings], *, path: Path) -> None:
        self._path = path
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        if path.is_dir():
            raise ConfigError(f"cannot read config file {path}: {os.strerror(errno.EISDIR)}")
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            return super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {self._path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {self._path}: {exc.strerror or exc}") from exc

    def leaves(self) -> list[Leaf]:
        """The file's values (tables flattened, arrays kept whole), with their key paths."""
        out: list[Leaf] = []
        _flatten(self.toml_data, (), f"file {self._path}", out)
        return out


def _flatten(table: Mapping[str, Any], prefix: tuple[str, ...], where: str, out: list[Leaf]) -> None:
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            _flatten(value, path, where, out)
        else:
            out.append((path, value, where))


def _nest(leaves: list[Leaf]) -> dict[str, Any]:
    """The leaves as nested tables; a key that is both a value and a table (refused earlier by
    `Origins`) keeps the table."""
    tree: dict[str, Any] = {}
    for path, value, _ in leaves:
        node = tree
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        if not isinstance(node.get(path[-1]), dict):
            node[path[-1]] = value
    return tree
