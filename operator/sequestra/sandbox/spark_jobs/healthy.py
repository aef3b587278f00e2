"""A healthy, short PySpark job: `--tasks` tasks of `--task-seconds` each (Python work on the executors), then a
small DataFrame aggregation with a shuffle; prints its result and exits 0.

    spark-submit healthy.py --tasks 8 --task-seconds 1
"""

from __future__ import annotations

import argparse
import time

from pyspark.sql import SparkSession


def work(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index * index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--task-seconds", type=float, default=1.0)
    args = parser.parse_args()

    spark = SparkSession.builder.appName("sequestra-healthy").getOrCreate()
    began = time.monotonic()
    seconds = args.task_seconds
    total = (spark.sparkContext.parallelize(range(args.tasks), args.tasks)
             .map(lambda index: work(index, seconds)).sum())
    grouped = spark.range(10_000).selectExpr("id % 10 AS key").groupBy("key").count().count()
    print(f"sequestra-healthy: sum of squares {total}, {grouped} groups, {time.monotonic() - began:.1f} s", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
