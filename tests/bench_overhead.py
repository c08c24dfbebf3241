"""What the hooks cost: the same app served bare and instrumented, side by side.

A script, not a pytest test (pytest only collects test_*.py):

    .venv/bin/python tests/bench_overhead.py [--rounds 5] [--seconds 5] [--variant wsgi]

Per variant, two gunicorn servers run at once on different ports, each with one sync worker
pinned to core 0: BARE (no config) and INSTRUMENTED (-c python:gunicorn_prom_ext.gunicorn_conf).
wrk, pinned to core 1, loads one of them at a time, alternating bare/instrumented for each
round, so drifts in machine speed hit both alike. Per round we record throughput and the
worker's CPU time (user+system, from psutil) divided by the requests wrk completed.

A variant with ``redis=True`` (wsgi-redis) starts its own redis-server on a free loopback
port; its instrumented server pushes there (REDIS_PUSH_INTERVAL=1, five times the default),
and a third server, FILE (the same hooks without Redis), runs in the same rounds, so the
Redis mode is compared with the file mode pair by pair.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from harness import DEFAULT_CONFIG, REPO_ROOT, Gunicorn, GunicornError
from redis_harness import RedisServer, redis_env


@dataclass(frozen=True)
class Variant:
    """One app to compare; later issues add Django/Flask entries to VARIANTS."""

    name: str
    app: str  # gunicorn's APP_MODULE
    cwd: Path  # directory the app module is imported from
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # APP_MODULE of the instrumented server when it differs (an app with its framework
    # extension installed); the bare server always serves ``app``.
    instrumented_app: str | None = None
    redis: bool = False  # instrumented server pushes to a redis-server started for the run
    # gunicorn config of the instrumented server when it is not the core's module (the
    # Django variant uses django_app's, as `manage.py rungunicorn` does).
    instrumented_config: str | None = None


VARIANTS: list[Variant] = [
    Variant("wsgi", "app:app", REPO_ROOT / "example_projects" / "hello_wsgi"),
    # gthread: the per-request cost with 8 threads sharing one worker's recorder lock.
    Variant(
        "wsgi-gthread",
        "app:app",
        REPO_ROOT / "example_projects" / "hello_wsgi",
        extra_args=("--threads", "8"),
    ),
    Variant(
        "flask",
        "bench_app:create_app()",
        REPO_ROOT / "tests" / "flask_apps",
        instrumented_app="bench_app:create_app(instrumented=True)",
    ),
    Variant("wsgi-redis", "app:app", REPO_ROOT / "example_projects" / "hello_wsgi", redis=True),
    Variant(
        "django",
        "benchsite.wsgi_bare:application",
        REPO_ROOT / "tests" / "django_project",
        instrumented_app="benchsite.wsgi_instrumented:application",
        instrumented_config="python:django_app.gunicorn_conf",
    ),
]


@dataclass
class Round:
    variant: str
    mode: str  # "bare" | "instrumented"
    index: int
    rps: float
    requests: int
    errors: int
    cpu_s: float

    @property
    def us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")


def run_wrk(wrk: str, url: str, seconds: float, connections: int, load_core: int | None) -> str:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if load_core is not None:
        cmd = ["taskset", "-c", str(load_core), *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def parse_wrk(out: str) -> tuple[float, int, int]:
    """(requests/s, requests completed, errors) from wrk's summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return float(rps.group(1)), int(total.group(1)), errors


def the_worker(server: Gunicorn) -> psutil.Process:
    pids = server.worker_pids()
    if len(pids) != 1:
        raise RuntimeError(f"expected 1 worker, found {pids}\n{server.log_text()}")
    return psutil.Process(pids[0])


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(
    server: Gunicorn, variant: str, mode: str, index: int, args: argparse.Namespace, wrk: str
) -> Round:
    pin(server, args.server_core)  # threads started since the last round too
    worker = the_worker(server)
    before = cpu_seconds(worker)
    out = run_wrk(wrk, server.app_url, args.seconds, args.connections, args.load_core)
    after = cpu_seconds(worker)
    if the_worker(server).pid != worker.pid:  # a restarted worker would void the CPU figure
        raise RuntimeError(f"{mode} worker restarted during round {index}\n{server.log_text()}")
    rps, requests, errors = parse_wrk(out)
    return Round(variant, mode, index, rps, requests, errors, after - before)


def pin(server: Gunicorn, core: int | None) -> None:
    """Master and worker on one core (the worker is what we measure; the master idles).

    Every thread: affinity is per thread, and a thread started before the pinning (a
    gthread pool thread, the package's watch thread) would otherwise run on the load
    generator's core, making gthread figures swing by tens of µs from run to run.
    """
    if core is None:
        return
    for pid in [server.master_pid, *server.worker_pids()]:
        for thread in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, {core})


def bench_variant(
    variant: Variant, args: argparse.Namespace, wrk: str, tmp: str
) -> tuple[list[Round], list[Round]]:
    def server(config: str | None, extra_env: dict[str, str] | None = None) -> Gunicorn:
        return Gunicorn(
            (variant.instrumented_app or variant.app) if config else variant.app,
            "-k",
            "sync",
            *variant.extra_args,
            config=(variant.instrumented_config or config) if config else None,
            cwd=str(variant.cwd),
            env={**variant.env, **(extra_env or {})},
            tmp_dir=tmp,
        )

    with contextlib.ExitStack() as stack:
        redis = start_redis(stack, tmp) if variant.redis and not args.bare_only else None
        servers = {"bare": server(None)}
        if redis is not None:
            servers["file"] = server(DEFAULT_CONFIG)  # the baseline the Redis mode must match
        if not args.bare_only:
            servers["instr"] = server(DEFAULT_CONFIG, redis_bench_env(redis) if redis else None)
        rounds: dict[str, list[Round]] = {mode: [] for mode in servers}
        for s in servers.values():
            stack.enter_context(s.start())
            pin(s, args.server_core)
        # Warm-up: imports, lazily created metric children, caches.
        sent = {
            mode: parse_wrk(run_wrk(wrk, s.app_url, 1, args.connections, args.load_core))[1]
            for mode, s in servers.items()
        }
        for i in range(1, args.rounds + 1):
            for mode, s in servers.items():
                r = measure(s, variant.name, mode, i, args, wrk)
                rounds[mode].append(r)
                sent[mode] += r.requests
                print(
                    f"{r.variant:<8} {r.index:>5} {r.mode:<6} {r.rps:>10.1f} {r.requests:>9} "
                    f"{r.errors:>6} {r.us_per_request:>10.1f}",
                    flush=True,
                )
        if "instr" in servers:
            # Sanity check that the hooks saw the load (wrk may count a few requests less:
            # those cut off at the end of a run are served but not completed).
            samples = servers["instr"].metrics()
            recorded = sum(
                v for (n, _), v in samples.items() if n.endswith("request_duration_seconds_count")
            )
            print(
                f"{variant.name:<8} metrics page: {len(samples)} samples, {recorded:.0f} requests "
                f"recorded, {sent['instr']} completed by wrk",
                flush=True,
            )
        if redis is not None:
            report_redis(variant.name, redis, servers["instr"], rounds["file"], rounds["instr"])
    return rounds["bare"], rounds.get("instr", [])


def start_redis(stack: contextlib.ExitStack, tmp: str) -> RedisServer:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    server = RedisServer(binary, Path(tmp)).start()
    stack.callback(server.stop)
    return server


def redis_bench_env(server: RedisServer) -> dict[str, str]:
    return redis_env(server, REDIS_PUSH_INTERVAL="1", REDIS_INSTANCE_ID="bench")


def report_redis(
    name: str, redis: RedisServer, instr: Gunicorn, file: list[Round], pushed: list[Round]
) -> None:
    """Redis mode against file mode, paired per round, and what the last push held."""
    from gunicorn_prom_ext.storage.redis import deserialise, instance_key

    time.sleep(1.5)  # one more push, after the last round
    blob = redis.client().get(instance_key("gunicorn", "bench"))
    if not isinstance(blob, bytes):
        raise RuntimeError(f"no snapshot in Redis\n{instr.log_text()}")
    in_redis = sum(
        s.value for f in deserialise(blob) for s in f.samples
        if s.name.endswith("request_duration_seconds_count")
    )  # fmt: skip
    med = statistics.median
    pairs = list(zip(file, pushed, strict=True))
    cpu = med(r.us_per_request / f.us_per_request for f, r in pairs)
    rps = med(r.rps / f.rps for f, r in pairs)
    print(
        f"{name:<8} redis snapshot: {len(blob)} bytes, {in_redis:.0f} requests recorded\n"
        f"\n== {name}: Redis mode vs file mode, medians of per-round ratios\n"
        f"  CPU µs/request   file {med(f.us_per_request for f in file):10.1f}   redis "
        f"{med(r.us_per_request for r in pushed):10.1f}   ratio {cpu:.3f} (limit 1.1)\n"
        f"  req/s            file {med(f.rps for f in file):10.1f}   redis "
        f"{med(r.rps for r in pushed):10.1f}   ratio {rps:.3f}",
        flush=True,
    )


def summarize(name: str, bare: list[Round], inst: list[Round]) -> None:
    med = statistics.median
    print(f"\n== {name}: medians over {len(bare)} rounds")
    print(f"  req/s            bare {med(r.rps for r in bare):10.1f}", end="")
    if inst:
        # Paired per round (bare i and instrumented i ran back to back), then the median.
        ratio = med(i.rps / b.rps for b, i in zip(bare, inst, strict=True))
        print(f"   instrumented {med(r.rps for r in inst):10.1f}   ratio {ratio:.3f}", end="")
    print()
    print(f"  CPU µs/request   bare {med(r.us_per_request for r in bare):10.1f}", end="")
    if inst:
        added = med(i.us_per_request - b.us_per_request for b, i in zip(bare, inst, strict=True))
        print(
            f"   instrumented {med(r.us_per_request for r in inst):10.1f}   added {added:+.1f}",
            end="",
        )
    print()
    errors = sum(r.errors for r in bare + inst)
    if errors:
        print(f"  WARNING: {errors} failed requests (non-2xx/3xx or socket errors)")


def main(argv: list[str] | None = None) -> int:
    names = [v.name for v in VARIANTS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0, help="wrk duration of one round")
    p.add_argument("--connections", type=int, default=4, help="wrk -c")
    p.add_argument(
        "--variant", action="append", choices=names, help=f"repeatable; default: {names[0]}"
    )
    p.add_argument(
        "--bare-only", action="store_true", help="only the bare server (no hooks needed)"
    )
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--load-core", type=int, default=1)
    args = p.parse_args(argv)
    args.seconds = max(1, round(args.seconds))  # wrk takes whole seconds

    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench_overhead: wrk not found; install it (apt-get install wrk, or run "
            "bash scripts/bootstrap.sh as root)",
            file=sys.stderr,
        )
        return 2
    cores = os.sched_getaffinity(0)
    if args.server_core not in cores or args.load_core not in cores or not shutil.which("taskset"):
        print(
            f"bench_overhead: cores {sorted(cores)} available; running without pinning "
            "(figures are noisier)",
            file=sys.stderr,
        )
        args.server_core = args.load_core = None

    selected = [v for v in VARIANTS if v.name in (args.variant or names[:1])]
    print(
        f"{'variant':<8} {'round':>5} {'mode':<6} {'req/s':>10} {'requests':>9} "
        f"{'errors':>6} {'CPU µs/req':>10}"
    )
    results: list[tuple[str, list[Round], list[Round]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for variant in selected:
            try:
                results.append((variant.name, *bench_variant(variant, args, wrk, tmp)))
            except (GunicornError, RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"bench_overhead: {variant.name}: {exc}", file=sys.stderr)
                return 1
    for name, bare, inst in results:
        summarize(name, bare, inst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
