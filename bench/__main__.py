"""`make bench`: every benchmark under bench/, each printing a table and writing JSON to
bench/results/."""

import sys

from bench import (
    costs_bench,
    day2_bench,
    dispatch_bench,
    edge_bench,
    facts_bench,
    field_bench,
    gateway_bench,
    held_polls_bench,
    jobs_bench,
    large_job_bench,
    notify_bench,
    operators_bench,
    output_bench,
    release_bench,
    replicas_bench,
    retention_bench,
    signing_bench,
    webhooks_bench,
)

BENCHES = {"dispatch": dispatch_bench.run, "gateway": gateway_bench.run, "held_polls": held_polls_bench.run,
           "signing": signing_bench.run, "jobs": jobs_bench.run, "edge": edge_bench.run,
           "operators": operators_bench.run, "retention": retention_bench.run, "output": output_bench.run,
           "notify": notify_bench.run, "costs": costs_bench.run, "replicas": replicas_bench.run,
           "large_job": large_job_bench.run, "field": field_bench.run,
           "schedules": day2_bench.schedules, "cancel": day2_bench.cancel, "facts": facts_bench.run,
           "release": release_bench.run, "webhooks": webhooks_bench.run}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        BENCHES[name]()
