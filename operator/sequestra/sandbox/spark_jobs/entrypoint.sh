#!/bin/bash
# The Spark image's entrypoint (sandbox/spark_image.py): what Spark's Kubernetes backend asks of a container.
#
# Spark starts its pods with this image's entrypoint and the arguments `driver ...` or `executor`, and passes
# everything else in the environment:
#   driver    SPARK_DRIVER_BIND_ADDRESS (the pod's IP); the arguments are spark-submit's own
#             (--properties-file, --class, the application and its arguments). In cluster mode the driver pod
#             runs spark-submit again, in client mode inside the pod, bound to the pod's address.
#   executor  SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, SPARK_EXECUTOR_CORES, SPARK_EXECUTOR_MEMORY,
#             SPARK_APPLICATION_ID, SPARK_EXECUTOR_POD_IP, SPARK_RESOURCE_PROFILE_ID, SPARK_JAVA_OPT_<n> (the
#             executor JVM's options, in order), SPARK_CONF_DIR, SPARK_CLASSPATH (extra entries, if any).
# Anything else runs as given (a shell, a check).
set -euo pipefail

SPARK_HOME="${SPARK_HOME:-/opt/spark}"
role="${1:-}"
if [ "$#" -gt 0 ]; then shift; fi

case "$role" in
  driver)
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    java_options=()
    for index in $(env | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)=.*/\1/p' | sort -n); do
      name="SPARK_JAVA_OPT_${index}"
      java_options+=("${!name}")
    done
    classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*"
    if [ -n "${SPARK_CLASSPATH:-}" ]; then classpath="$classpath:$SPARK_CLASSPATH"; fi
    exec java "${java_options[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --bind-address "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID"
    ;;
  "")
    echo "usage: entrypoint.sh driver <spark-submit arguments> | executor | <command>" >&2
    exit 2
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
