"""Fetching Apache Kafka's jars from Maven Central into mig's cache, once per version.

Kafka is not installed on the hosts mig targets and Docker may be absent, so mig asks Maven
for ``org.apache.kafka:kafka_2.13`` and its runtime dependencies. Kafka's POM leaves out a
logging binding; mig adds ``log4j-slf4j-impl`` (Kafka 4.1 uses slf4j-api 1.7) so the broker
logs through log4j2 into its own file. ``kafka-tools`` comes along so Kafka's console tools
(``ConsoleConsumer`` and friends) run from the same classpath.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import structlog

from mig.errors import BrokerError
from mig.paths import cache_dir

__all__ = ["KAFKA_VERSION", "LOG4J_VERSION", "ensure_jars", "java_command", "classpath"]

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
MIN_JAVA = 17

log = structlog.get_logger("mig.broker")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>mig</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


def java_command() -> str:
    """The ``java`` executable (JAVA_HOME first), checked to be version 17 or newer."""
    import os

    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError(
            "Java is not installed: the embedded Kafka broker needs Java 17 or newer"
            " (Debian: apt install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not match or int(match.group(1)) < MIN_JAVA:
        found = match.group(1) if match else "unknown"
        raise BrokerError(f"{java} is Java {found}; the Kafka broker needs Java {MIN_JAVA}+")
    return java


def classpath(libs: Path) -> str:
    return str(libs / "*")


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """Return the folder holding Kafka ``version``'s jars, fetching them if needed.

    Safe to call from several processes at once: a lock file serialises the fetch and the
    folder only appears (by rename) once complete.
    """
    root = cache_dir() / f"kafka-{version}"
    libs = root / "libs"
    if (libs / ".complete").exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs
        _fetch(root, libs, version)
    return libs


def _fetch(root: Path, libs: Path, version: str) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "Maven (mvn) is not installed: mig fetches Kafka's jars from Maven Central with it"
            " (Debian: apt install maven)"
        )
    log.info("mig.broker.fetch_jars", kafka=version, into=str(libs))
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        staging = Path(tmp) / "libs"
        cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = " ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise BrokerError(f"fetching Kafka {version} jars with Maven failed: {tail[:400]}")
        (staging / ".complete").write_text(version + "\n")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    log.info("mig.broker.jars_ready", kafka=version, jars=len(list(libs.glob("*.jar"))))
