"""Apache Kafka 4.x, single node in KRaft mode, from the Maven Central jars."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from importlib import resources
from pathlib import Path

from labelloop.stack.base import Component, Progress, StackError, port_open, require_tool

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaComponent(Component):
    """One broker+controller; topics keep events forever by default (the audit log)."""

    name = "kafka"

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap_servers

    @property
    def libs_dir(self) -> Path:
        return self.settings.cache_dir / "kafka" / self.settings.kafka_version / "libs"

    def install(self, progress: Progress) -> None:
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return
        require_tool(
            "java", "Install Java 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`."
        )
        mvn = require_tool("mvn", "Install Maven, e.g. `apt-get install maven`.")
        progress(f"fetching Kafka {self.settings.kafka_version} jars from Maven Central")
        pom = resources.files("labelloop.stack") / "assets" / "kafka-pom.xml"
        with resources.as_file(pom) as pom_path:
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom_path),
                    "dependency:copy-dependencies",
                    f"-Dkafka.version={self.settings.kafka_version}",
                    f"-DoutputDirectory={self.libs_dir}",
                    "-DincludeScope=runtime",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(
                "mvn could not fetch the Kafka jars:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        marker.write_text(self.settings.kafka_version)

    @property
    def _config_path(self) -> Path:
        return self.data_dir / "server.properties"

    def _write_config(self) -> None:
        s = self.settings
        data = (self.data_dir / "data").resolve()
        controller = f"{s.kafka_host}:{s.kafka_controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{s.kafka_host}:{s.kafka_port},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{s.kafka_host}:{s.kafka_port},CONTROLLER://{controller}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(s.kafka_partitions),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # One node: no point waiting for more group members before the first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._config_path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        log = (self.settings.log_dir / "kafka-server.log").resolve()
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log=log))

    def _java(self, main: str, *args: str) -> list[str]:
        java = require_tool(
            "java", "Install Java 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`."
        )
        return [
            java,
            f"-Xmx{self.settings.kafka_heap}",
            f"-Xms{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(self.data_dir / 'log4j2.properties').resolve()}",
            "-cp",
            f"{self.libs_dir}/*",
            main,
            *args,
        ]

    def prepare(self, progress: Progress) -> None:
        self._write_config()
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        progress("formatting Kafka storage (first start)")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                # One argument with "=": a URL-safe id may begin with "-", which the tool's
                # parser would take for an option (1 id in 64).
                f"--cluster-id={cluster_id}",
                "-c",
                str(self._config_path),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def command(self) -> tuple[list[str], dict[str, str]]:
        return self._java("kafka.Kafka", str(self._config_path)), dict(os.environ)

    def healthy(self) -> bool:
        s = self.settings
        if not port_open(s.kafka_host, s.kafka_port):
            return False
        from labelloop.messaging.topics import cluster_reachable

        return cluster_reachable(s)

    def version(self) -> str | None:
        return self.settings.kafka_version if self.libs_dir.exists() else None

    def after_start(self, progress: Progress) -> None:
        from labelloop.messaging.topics import ensure_topics

        created = ensure_topics(self.settings)
        if created:
            progress(f"created topics: {', '.join(created)}")
