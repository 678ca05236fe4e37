"""Apache Spark for data too big for one machine (the `genrec[spark]` extra): preparing interaction logs into
Parquet shards (`genrec.spark.prepare`) and scoring every user in batch (`genrec.spark.scoring`).

pyspark is imported lazily, so `import genrec.spark` works without it; `spark_available()` says whether both
pyspark and a Java runtime are present.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys


def spark_available() -> bool:
    """True when pyspark is installed and a Java runtime (JAVA_HOME or `java` on PATH) is present."""
    has_java = bool(os.environ.get("JAVA_HOME")) or shutil.which("java") is not None
    return has_java and importlib.util.find_spec("pyspark") is not None


def local_session(app: str = "genrec", cores: int | str = "*", shuffle_partitions: int = 8,
                  driver_memory: str = "2g", extra: dict[str, str] | None = None):
    """A local-mode SparkSession bound to 127.0.0.1 with the web UI off (tests, single machines).

    On a cluster, use the session spark-submit gives (`SparkSession.builder.getOrCreate()`) instead.
    Python workers run this interpreter, so they see the same genrec. Returns the existing session if one
    is active (settings then stay as they were)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app)
        .master(f"local[{cores}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in (extra or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
