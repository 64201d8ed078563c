"""Exceptions shared by the agent's layers.

Every message is meant to be printed as one line to an operator: it names what is wrong
and, where there is one, what to do about it.
"""


class FlannelError(Exception):
    """Base class of every error the agent reports to the operator."""


class ConfigError(FlannelError):
    """The network config in etcd is missing or invalid."""


class ConfigMissingError(ConfigError):
    """The config key does not exist (yet).

    The hint names the prefix setting as the agent's flag; `named` spells it the way another
    edge does (an Ansible module's `prefix`), as SettingError does for a bad value.
    """

    def __init__(self, key: str, how_to_write: str) -> None:
        self.key = key
        self.how_to_write = how_to_write
        super().__init__(self.named({}))

    def named(self, names: dict[str, str]) -> str:
        prefix = names.get("prefix", "--etcd-prefix")
        return (
            f"network config key {self.key} not found in etcd; write it with e.g. "
            f"{self.how_to_write}, and check {prefix}"
        )


class UsageError(FlannelError):
    """A command-line flag or environment variable is invalid."""


class SettingError(UsageError):
    """One setting has a bad value; `setting` is its canonical key (e.g. "endpoints").

    Lower layers do not know whether the operator typed `--etcd-endpoints` or an Ansible
    module's `endpoints`: they raise this, and each entry point names the setting its own way.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem

    def named(self, names: dict[str, str]) -> str:
        """The message with the setting spelled as in `names` (key -> flag or option)."""
        return f"{names.get(self.setting, self.setting)}: {self.problem}"


class StoreError(FlannelError):
    """etcd answered with an error."""


class StoreUnavailableError(StoreError):
    """No etcd endpoint could be reached within the timeout."""


class CompactedError(StoreError):
    """A watch asked for a revision that etcd has already compacted."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


class OutOfSubnetsError(FlannelError):
    """Every subnet between SubnetMin and SubnetMax is leased or reserved."""


class DataPathError(FlannelError):
    """A data path worker (packet pump) died; the agent exits so that systemd restarts it."""


class InterfaceError(FlannelError):
    """No usable external interface or public IP could be determined."""
