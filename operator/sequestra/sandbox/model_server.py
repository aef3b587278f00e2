"""The sandbox's language model server: llama.cpp's OpenAI-compatible HTTP server, in-process via xllamacpp.

Run by the model server's own interpreter (provision.py makes a virtualenv with xllamacpp in the cache),
so it imports nothing of Sequestra: only the standard library and xllamacpp. The server answers
`/v1/chat/completions` (with `response_format` json_schema) and `/health`, on loopback only.
"""

from __future__ import annotations

import argparse
import signal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--alias", required=True, help="the model name the server answers to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=8192, help="tokens of context per request slot")
    args = parser.parse_args()

    import xllamacpp  # only in the model server's own virtualenv (provision.py)

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.context
    params.n_parallel = 1  # one request at a time: two would only share the same two cores
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # Idle worker threads sleep instead of spinning: between requests the server costs no CPU at all.
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    server = xllamacpp.Server(params)
    print(f"model server: {args.alias} on {server.listening_address}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    main()
