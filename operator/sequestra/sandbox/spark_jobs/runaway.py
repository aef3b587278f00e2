"""A runaway PySpark job: far more tasks than its executors can run at once (`--tasks` of `--task-seconds`
each, in `--waves` rounds with a shuffle between them), so that under dynamic allocation (with shuffle tracking)
Spark asks for executors up to spark.dynamicAllocation.maxExecutors and keeps them busy; those the node has no
room for wait Pending. Each round keeps the shuffle files of the last, as a real job's stages do.

    spark-submit runaway.py --tasks 200 --task-seconds 10 --waves 1
"""

from __future__ import annotations

import argparse
import time

from pyspark.sql import SparkSession


def work(index: int, seconds: float) -> tuple[int, int]:
    time.sleep(seconds)
    return index % 97, index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--task-seconds", type=float, default=10.0)
    parser.add_argument("--waves", type=int, default=1)
    args = parser.parse_args()

    spark = SparkSession.builder.appName("sequestra-runaway").getOrCreate()
    context = spark.sparkContext
    seconds = args.task_seconds
    began = time.monotonic()
    for wave in range(args.waves):
        pairs = context.parallelize(range(args.tasks), args.tasks).map(lambda index: work(index, seconds))
        keys = pairs.reduceByKey(lambda a, b: a + b, numPartitions=max(1, args.tasks // 4)).count()
        print(f"sequestra-runaway: wave {wave + 1}/{args.waves}: {args.tasks} tasks, {keys} keys, "
              f"{time.monotonic() - began:.1f} s", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
