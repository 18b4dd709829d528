"""``tgc batch``: one Dask task per partition, resumable and fault tolerant.

* **Tasks**: one per input file, or one per value of ``--partition-field``
  (a task reads only its own rows). Each task runs
  :func:`~tuned_grid_clustering.cli.job.cluster_units`, the same code as
  ``tgc cluster``, with the seed derived from the partition's name, so the
  clusters are identical to a single-machine run.
* **Where**: a Dask ``LocalCluster`` of worker processes by default, or any
  running scheduler (``--scheduler tcp://host:port``). Workers read the
  inputs and write the outputs themselves, so on a real cluster both paths
  must be visible to every worker (a shared file system).
* **Faults**: a partition whose data or parameters are bad fails alone,
  recorded by name with its error. A worker that dies has its task
  rescheduled by Dask on another worker. The command exits 1 only when
  more than ``--max-failed-share`` of the partitions failed.
* **Resume**: the manifest is rewritten after every finished partition; a
  new run with the same settings skips partitions whose manifest entry is
  ``ok``, whose output files exist and whose input is unchanged (SHA-256),
  and runs the rest (including earlier failures).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ClusteringInputError
from ..core.partitions import STATUS_FAILED, STATUS_OK, partition_name
from . import io
from .manifest import new_manifest, read_manifest, write_manifest

MANIFEST_NAME = "manifest.json"
PARTITIONS_FOLDER = "partitions"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PartitionTask:
    """One partition to cluster: where to read it and where to write it."""

    name: str
    value: Any  # JSON-able partition value (the file stem for one file per partition)
    path: str
    layer: str | None
    filtered: bool  # read only rows with partition_field == value
    output: str
    input_sha256: str
    expected_units: int | None = None


def safe_file_name(name: str) -> str:
    """A file name for a partition name; unsafe names get a checksum suffix."""
    if _SAFE_NAME.fullmatch(name) and len(name) <= 100:
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "partition"
    return f"{cleaned}-{zlib.crc32(name.encode('utf-8')):08x}"


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Input files; a folder stands for the vector files inside it (sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in io.INPUT_SUFFIXES
                and not p.name.startswith(".")
                and not p.stem.endswith(io.CLUSTERS_SUFFIX)
            )
            if not found:
                raise ClusteringInputError(
                    f"Folder {item!r} holds no input files ({', '.join(io.INPUT_SUFFIXES)})."
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ClusteringInputError(f"Input {item!r} does not exist. Check the path.")
    return files


def collect_tasks(
    inputs: Sequence[str],
    *,
    output_dir: Path,
    output_format: str,
    partition_field: str | None,
    fields: Sequence[str],
    layer: str | None = None,
) -> list[PartitionTask]:
    """The partitions of the inputs, each with its output path; largest first."""
    tasks: list[PartitionTask] = []
    for path in expand_inputs(inputs):
        io.check_fields(path, fields, layer)
        digest = io.sha256_file(path)
        if partition_field:
            counts = io.partition_counts(path, partition_field, layer)
            entries = [(partition_name(v), v, True, n) for v, n in counts.items()]
        else:
            entries = [(path.stem, path.stem, False, None)]
        for name, value, filtered, count in entries:
            output = output_dir / PARTITIONS_FOLDER / f"{safe_file_name(name)}.{output_format}"
            tasks.append(
                PartitionTask(
                    name=name,
                    value=value,
                    path=str(path.resolve()),
                    layer=layer,
                    filtered=filtered,
                    output=str(output.resolve()),
                    input_sha256=digest,
                    expected_units=count,
                )
            )
    seen: dict[str, str] = {}
    for task in tasks:
        if task.name in seen:
            raise ClusteringInputError(
                f"Partition {task.name!r} appears twice (in {seen[task.name]} and {task.path}). "
                "Partition names must be unique across the inputs."
            )
        seen[task.name] = task.path
    return tasks


def run_partition_task(task: dict[str, Any], settings_json: dict[str, Any]) -> dict[str, Any]:
    """Cluster one partition and write its outputs; runs on a Dask worker.

    Never raises for bad data: the returned manifest entry says ``failed``
    with the error. (A worker that dies is Dask's business: it reschedules.)
    """
    from .job import cluster_units
    from .settings import RunSettings

    started = time.perf_counter()
    settings = RunSettings.from_json(settings_json)
    entry: dict[str, Any] = {"partition": task["name"], "status": STATUS_FAILED}
    try:
        units = io.read_units(
            task["path"],
            layer=task["layer"],
            partition_field=settings.partition_field if task["filtered"] else None,
            partition=task["value"] if task["filtered"] else None,
        )
        expected = task.get("expected_units")
        if expected is not None and len(units) != expected:
            raise ClusteringInputError(
                f"read {len(units)} units of partition {task['name']}, expected {expected}; "
                "the input changed during the run"
            )
        job = cluster_units(units, task["value"], settings)
        entry = job.entry
        if job.ok:
            written = io.write_layers(job.units, job.clusters, task["output"])
            entry["outputs"] = [{"path": str(p), "sha256": io.sha256_file(p)} for p in written]
    except Exception as exc:  # noqa: BLE001 - the partition fails alone
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["partition"] = task["name"]
    entry["input"] = task["path"]
    entry["input_sha256"] = task["input_sha256"]
    entry["worker"] = _worker_name()
    entry["task_seconds"] = round(time.perf_counter() - started, 3)
    return entry


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except Exception:  # noqa: BLE001 - not on a worker
        return socket.gethostname()


def _is_done(task: PartitionTask, entry: dict[str, Any] | None) -> bool:
    """A finished partition: ok in the manifest, same input, outputs present."""
    if not entry or entry.get("status") != STATUS_OK:
        return False
    if entry.get("input_sha256") != task.input_sha256:
        return False
    outputs = entry.get("outputs") or []
    return bool(outputs) and all(Path(o["path"]).is_file() for o in outputs)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def _open_client(scheduler: str | None, workers: int | None) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusteringInputError(
            "tgc batch needs Dask distributed, which is not installed. Install it with: "
            "python -m pip install 'tuned_grid_clustering[dask]'"
        ) from exc
    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except (OSError, TimeoutError) as exc:
            raise ClusteringInputError(
                f"Cannot reach the Dask scheduler at {scheduler} ({exc}). Check the address, "
                "or start one with: dask scheduler --host 0.0.0.0 --port 8786"
            ) from exc
    import os

    cluster = LocalCluster(
        n_workers=workers or max(1, os.cpu_count() or 1),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
    )
    return Client(cluster), cluster


def run_batch(args: Any, argv: Sequence[str] | None = None) -> int:
    """``tgc batch``: run every unfinished partition as a Dask task."""
    from .main import _say, report_failures, settings_from_args

    io.require_geo_packages()
    settings = settings_from_args(args)
    settings_json = settings.to_json()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = output_dir / MANIFEST_NAME

    tasks = collect_tasks(
        args.inputs,
        output_dir=output_dir,
        output_format=args.format,
        partition_field=settings.partition_field,
        fields=settings.fields,
        layer=args.layer,
    )
    if not tasks:
        raise ClusteringInputError("The inputs hold no partition. Check the inputs.")

    previous = read_manifest(manifest_path)
    if previous is not None and _canonical(previous.get("settings")) != _canonical(settings_json):
        raise ClusteringInputError(
            f"{output_dir} holds a run with other settings ({manifest_path}). "
            "Use a new --output-dir, or delete that folder to start over."
        )
    inputs = sorted({(t.path, t.input_sha256) for t in tasks})
    manifest = new_manifest(
        command="batch",
        settings=settings_json,
        inputs=[{"path": path, "sha256": digest, "layer": args.layer} for path, digest in inputs],
        argv=list(argv) if argv is not None else sys.argv[1:],
        extra={"scheduler": args.scheduler or "local", "runs": []},
    )
    if previous is not None:
        manifest["created"] = previous.get("created", manifest["created"])
        manifest["runs"] = list(previous.get("runs", []))
    old_entries = (previous or {}).get("partitions", {})
    names = {task.name for task in tasks}
    # Keep every entry of this run's partitions that is finished; drop the rest.
    todo = [task for task in tasks if not _is_done(task, old_entries.get(task.name))]
    todo_names = {task.name for task in todo}
    manifest["partitions"] = {
        task.name: old_entries[task.name] for task in tasks if task.name not in todo_names
    }
    skipped = len(tasks) - len(todo)
    run_record = {"started": manifest["updated"], "submitted": len(todo), "skipped": skipped}
    manifest["runs"].append(run_record)
    write_manifest(manifest, manifest_path)
    if skipped:
        _say(f"{skipped} of {len(tasks)} partitions already done: skipped.")

    started = time.perf_counter()
    if todo:
        _run_on_dask(args, todo, settings_json, manifest, manifest_path)
    run_record["seconds"] = round(time.perf_counter() - started, 3)
    assert set(manifest["partitions"]) <= names
    write_manifest(manifest, manifest_path)
    _say(f"manifest: {manifest_path}")
    return report_failures(manifest["summary"], args.max_failed_share)


def _run_on_dask(
    args: Any,
    todo: list[PartitionTask],
    settings_json: dict[str, Any],
    manifest: dict[str, Any],
    manifest_path: Path,
) -> None:
    from distributed import as_completed

    from .main import _progress_bar

    client, cluster = _open_client(args.scheduler, args.workers)
    token = uuid.uuid4().hex[:8]
    total = len(manifest["partitions"]) + len(todo)
    bar = _progress_bar(total, args.quiet, "partitions", initial=len(manifest["partitions"]))
    futures = {}
    try:
        for task in todo:
            # Bigger partitions first: the run does not end waiting for one large task.
            priority = task.expected_units or 0
            future = client.submit(
                run_partition_task,
                asdict(task),
                settings_json,
                key=f"tgc-{safe_file_name(task.name)}-{token}",
                pure=False,
                priority=priority,
            )
            futures[future] = task
        n_failed = 0
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                entry = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the task failed
                entry = {
                    "partition": task.name,
                    "status": STATUS_FAILED,
                    "error": f"{type(exc).__name__}: {exc}",
                    "input": task.path,
                    "input_sha256": task.input_sha256,
                }
            manifest["partitions"][task.name] = entry
            write_manifest(manifest, manifest_path)
            if entry.get("status") != STATUS_OK:
                n_failed += 1
                bar.set_postfix_str(f"{n_failed} failed")
            bar.update(1)
            future.release()
    finally:
        bar.close()
        for future in futures:
            if not future.done():
                future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()
