"""A long-running PySpark job whose behaviour follows a feature flag, as a team's job reads its own: the driver
reads the key `mode` of the ConfigMap `--flags` (in its namespace, through the Kubernetes API with its own
ServiceAccount) before every round, and runs one round of that mode:

    steady    `--steady-tasks` tasks of one second: a job at its usual, small size
    runaway   `tasks` (a key of the flag, or `--runaway-tasks`) tasks of `--task-seconds`: under dynamic
              allocation Spark asks for executors up to spark.dynamicAllocation.maxExecutors, and those the
              node cannot place wait Pending
    oom       `--steady-tasks` tasks, each gathering far more rows than the executor's memory holds into one
              group. With a memoryOverhead that leaves room beyond the heap, the JVM runs out of heap first
              and the executor exits with Spark's code 52; with a small one, the container goes over its limit
              first and is OOMKilled. Spark replaces the executor and retries the task; when the stage fails
              for good the round is reported failed and the next one starts, as a scheduler's retry would.
    spill     a skewed shuffle: one key gets nearly every row and its task spills to disk
    stop      the job ends (exit 0)

A mode the job does not know, or a flag it cannot read, is `steady` (a job whose flag service is down keeps
its usual behaviour). Each round prints one line; the job ends on `stop` or after `--max-seconds`.

    spark-submit flagged.py --flags etl-flags --steady-tasks 2 --runaway-tasks 60 --task-seconds 4
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
import urllib.request
from collections.abc import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
API = "https://kubernetes.default.svc"


def read_flags(flags: str) -> dict[str, str]:
    try:
        with open(f"{SERVICE_ACCOUNT}/token") as token_file, open(f"{SERVICE_ACCOUNT}/namespace") as ns_file:
            token, namespace = token_file.read().strip(), ns_file.read().strip()
        context = ssl.create_default_context(cafile=f"{SERVICE_ACCOUNT}/ca.crt")
        request = urllib.request.Request(f"{API}/api/v1/namespaces/{namespace}/configmaps/{flags}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, context=context, timeout=5) as reply:
            return {str(k): str(v).strip() for k, v in (json.load(reply).get("data") or {}).items()}
    except (OSError, ValueError):
        return {}


def sleeper(seconds: float) -> Callable[[int], tuple[int, int]]:
    def work(index: int) -> tuple[int, int]:
        time.sleep(seconds)
        return index % 97, index
    return work


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flags", required=True)
    parser.add_argument("--steady-tasks", type=int, default=2)
    parser.add_argument("--runaway-tasks", type=int, default=60)
    parser.add_argument("--task-seconds", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()

    spark = SparkSession.builder.appName("sequestra-flagged").getOrCreate()
    context = spark.sparkContext
    began = time.monotonic()
    round_number = 0
    while time.monotonic() - began < args.max_seconds:
        flags = read_flags(args.flags)
        mode = flags.get("mode", "steady")
        round_number += 1
        started = time.monotonic()
        if mode == "stop":
            break
        try:
            if mode == "runaway":
                tasks = int(flags.get("tasks") or args.runaway_tasks)
                pairs = context.parallelize(range(tasks), tasks).map(sleeper(args.task_seconds))
                result = pairs.reduceByKey(lambda a, b: a + b, numPartitions=max(1, tasks // 4)).count()
            elif mode == "oom":
                # Every row into one group's list, on the executor's heap: far beyond it whatever its size.
                # At its usual parallelism: new input, not more work, so dynamic allocation asks for no more.
                rows = spark.range(0, 400_000_000, numPartitions=args.steady_tasks).select(
                    F.lit(1).alias("key"), F.concat(F.lit("x" * 64), F.col("id").cast("string")).alias("payload"))
                result = len(rows.groupBy("key").agg(F.collect_list("payload").alias("all")).collect())
            elif mode == "spill":
                # One key gets nearly every row: its task sorts far more than its share of execution memory.
                rows = spark.range(0, 30_000_000, numPartitions=8).select(
                    F.when(F.col("id") % 100 == 0, F.col("id")).otherwise(F.lit(0)).alias("key"),
                    F.concat(F.lit("y" * 32), F.col("id").cast("string")).alias("payload"))
                result = rows.repartition(8, "key").sortWithinPartitions("key", "payload").count()
            else:
                mode = "steady"
                result = context.parallelize(range(args.steady_tasks), args.steady_tasks).map(sleeper(1.0)).count()
        except Exception as error:  # a failed round is reported and the next one runs, as a
            # scheduler's retry of the stage would
            result = f"failed ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
        print(f"sequestra-flagged: round {round_number} {mode}: {result} in {time.monotonic() - started:.1f} s",
              flush=True)
        if mode == "steady":
            time.sleep(1.0)
    print(f"sequestra-flagged: done after {round_number} rounds, {time.monotonic() - began:.1f} s", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
