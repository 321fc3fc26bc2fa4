"""runtime.config: every variable declared once, parsed with errors that name it, documented,
read when a component starts (never at import), and by no other module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import config
from runtime.config import VARIABLES, ConfigError, MissingFile, Mount, markdown_table
from storage import S3Settings

REPO = Path(__file__).parent.parent
DOC = REPO / "docs" / "configuration.md"
BEGIN, END = "<!-- variables: python -m runtime.config -->\n", "<!-- end of variables -->"


def test_the_documented_table_is_the_declared_variables() -> None:
    doc = DOC.read_text()
    table = doc[doc.index(BEGIN) + len(BEGIN) : doc.index(END)]
    assert table == markdown_table(), "regenerate it: python -m runtime.config"
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE)
    assert listed == list(VARIABLES)
    assert "(docs/configuration.md)" in (REPO / "README.md").read_text()


def test_python_m_runtime_config_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime.config"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == markdown_table()


def test_every_default_is_a_value_of_its_kind() -> None:
    for var in VARIABLES.values():
        default = var.default
        if default is None or isinstance(default, tuple):
            continue
        text = ("1" if default else "0") if isinstance(default, bool) else str(default)
        assert var.get({var.name: text}) == default, var.name


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        (config.TICK, "fast", "a number of seconds above 0"),
        (config.RESULTS_TTL, "0", "a number of seconds above 0"),
        (config.HEARTBEAT, "nan", "a number of seconds above 0"),
        (config.PARENT_PID, "0", "a process id"),
        (config.LAUNCHER, "k8s", "process or docker"),
        (config.DOCKER_ADOPT, "some", "mine, all or none"),
        (config.DOCKER_STOP_ON_EXIT, "maybe", "a boolean"),
        (config.DOCKER_VOLUMES, "models", "source:/container/path"),
        (config.GPUS, "two", "a whole number, -1 for all"),
        (config.MEMORY_MB, "-5", "MiB"),
        (config.S3_BUCKET, "ab", "3 to 63 characters"),
        (config.S3_ENDPOINT, "host:9000/path", "host[:port]"),
        (config.S3_INTERMEDIATE_PREFIX, "/", "a prefix ending with /"),
        (config.LOG_LEVEL, "chatty", "DEBUG, INFO, WARNING or ERROR"),
    ],
    ids=lambda p: p.name if isinstance(p, config.Var) else None,
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(
    var: config.Var[object], value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        var.get({var.name: value})
    assert raised.value.variable == var.name
    assert str(raised.value).startswith(f"{var.name}={value!r} is not ")
    assert expected in str(raised.value)
    assert isinstance(raised.value, ValueError)  # what callers caught before


def test_a_secret_is_never_printed(tmp_path: Path) -> None:
    secret = config.Var(
        "SHOAL_TEST_SECRET", config.SECONDS, 1.0, "a test", "tests", secret=True
    )  # a number-typed secret, so that it can be malformed
    with pytest.raises(ConfigError) as raised:
        secret.get({secret.name: "hunter2"})
    assert "hunter2" not in str(raised.value) and "***" in str(raised.value)
    assert "SHOAL_TEST_SECRET" not in VARIABLES  # built, not declared


def test_a_missing_file_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(MissingFile) as raised:
        config.NATS_CREDS.get({"SHOAL_NATS_CREDS": str(tmp_path / "missing.creds")})
    assert isinstance(raised.value, FileNotFoundError)
    (tmp_path / "here.creds").write_text("x")
    assert config.NATS_CREDS.get({"SHOAL_NATS_CREDS": str(tmp_path / "here.creds")}) == (
        tmp_path / "here.creds"
    )


def test_empty_counts_as_unset_except_where_declared() -> None:
    assert config.TICK.get({"SHOAL_TICK": ""}) == 0.5
    assert config.TICK.get({"SHOAL_TICK": "  "}) == 0.5
    assert config.NATS_URL.get({"SHOAL_NATS_URL": ""}) == config.DEFAULT_NATS_URL
    assert config.S3_REGION.get({"SHOAL_S3_REGION": ""}) == ""  # ask for each bucket's
    assert config.S3_SECURE.get({"SHOAL_S3_SECURE": ""}) is False
    assert config.S3_SECURE.get({}) is None  # the endpoint's scheme decides


def test_parsed_values() -> None:
    assert config.LOG_LEVEL.get({"SHOAL_LOG_LEVEL": "debug"}) == "DEBUG"
    assert config.DOCKER_STOP_ON_EXIT.get({"SHOAL_DOCKER_STOP_ON_EXIT": "0"}) is False
    assert config.DOCKER_STOP_ON_EXIT.get({"SHOAL_DOCKER_STOP_ON_EXIT": "yes"}) is True
    volumes = config.DOCKER_VOLUMES.get(
        {"SHOAL_DOCKER_VOLUMES": "auto:/var/cache/shoal, /srv/models:/models:ro,"}
    )
    assert volumes == (Mount("auto", "/var/cache/shoal"), Mount("/srv/models", "/models", "ro"))
    assert config.GPUS.get({"SHOAL_GPUS": "-1"}) == -1
    assert config.worker_credentials(
        {"SHOAL_WORKER_NATS_USER": "w", "SHOAL_WORKER_NATS_CREDS": "", "SHOAL_NATS_USER": "c"}
    ) == {"SHOAL_NATS_USER": "w", "SHOAL_NATS_CREDS": ""}


def test_s3_credentials_come_from_one_family() -> None:
    with pytest.raises(ConfigError, match="SHOAL_S3_ACCESS_KEY and SHOAL_S3_SECRET_KEY"):
        S3Settings.from_env({"SHOAL_S3_ACCESS_KEY": "ak", "AWS_SECRET_ACCESS_KEY": "sk"})
    with pytest.raises(ConfigError, match="SHOAL_S3_SECURE='maybe' is not a boolean"):
        S3Settings.from_env({"SHOAL_S3_SECURE": "maybe"})


# Nothing is read at import time: every module imports with the environment's reads recorded.
IMPORTS = """
import os, sys

class Recording(dict):
    def __getitem__(self, key):
        reads.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        reads.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        reads.add(key)
        return super().__contains__(key)

reads = set()
os.environ = Recording(os.environ)
import controller, controller.cli, controller.docker_launcher, runtime, runtime.launch
import runtime.partition.worker, runtime.worker.main, storage, storage.ready
print(sorted(k for k in reads if k.startswith("SHOAL_")))
"""


def test_no_module_reads_a_variable_when_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout


# Reading the environment anywhere but runtime.config (the one place variables are declared).
READ = re.compile(r"os\.environ\.get\(|os\.environ\[|getenv\(|in os\.environ\b")


def test_no_other_module_reads_the_environment() -> None:
    readers = {}
    for package in ("runtime", "controller", "storage"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name.startswith("runtime/config/"):
                continue
            lines = [line for line in path.read_text().splitlines() if READ.search(line)]
            if lines:
                readers[name] = lines
    assert readers == {}, "read the environment through runtime.config"


def test_a_bad_setting_is_one_line_and_a_usage_exit() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOAL_DOCKER_ADOPT": "everything"}
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "controller", "--launcher", "docker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: SHOAL_DOCKER_ADOPT='everything' is not mine, all or none"
    ]
