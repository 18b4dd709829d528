"""AWS Lambda handler: cluster one partition object, S3 in, S3 out.

The original clustering-aws flow, parameterised: a Step Functions Map
(``state_machine.asl.json``) invokes this function once per partition
object, then once more with ``"action": "summarize"`` to write the run
manifest and decide whether the run passed.

Cluster event (every parameter in the payload)::

    {
      "input":  {"bucket": "surveys", "key": "grids/1102305007.parquet"},
      "output": {"bucket": "surveys", "key": "clusters/1102305007.parquet"},
      "partition": "1102305007",            # default: the input key's stem
      "params": {"desired_cluster_weight": 240, "desired_cluster_radius": 1000,
                 "max_cluster_weight": 300, "max_passes": 3, "random_state": 42},
      "weight_field": "population",          # optional
      "partition_field": "PSGC",             # optional: keep only rows of this partition
      "override_fields": {"desired_cluster_radius": "target_radius"},   # optional
      "crs": "auto", "cluster_shape": "auto", "input_crs": null, "layer": null
    }

The output key's suffix picks the format: ``.parquet`` writes the units there
and the clusters to ``<stem>.clusters.parquet``; ``.gpkg`` writes one
GeoPackage with layers ``units`` and ``clusters``. A manifest entry goes to
``<stem>.manifest.json`` next to them.

Responses (never an exception for bad input or bad data):

* ``{"status": "ok", "partition": ..., "n_clusters": ..., "outputs": [...], ...}``
* ``{"status": "failed", "partition": ..., "error": "..."}``: the data could
  not be clustered (the error says why); the run goes on.
* ``{"status": "invalid", "field": "params.max_passes", "error": "..."}``: a
  malformed payload, naming the bad field.

S3 transfer problems raise :class:`S3TransferError`, which the state machine
retries. The S3 endpoint can be redirected (an S3-compatible store, a test
server) with the environment variable ``AWS_ENDPOINT_URL_S3``.

Seeds are derived from the run's seed and the partition name exactly as in
``tgc cluster`` and ``tgc batch``, so all three give the same clusters.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

FORMATS = (".parquet", ".gpkg")
# Fields of a cluster event besides the run settings (cli.settings.SETTING_NAMES).
_EVENT_KEYS = ("action", "input", "output", "partition", "layer")

_clients: dict[str | None, Any] = {}


class S3TransferError(RuntimeError):
    """Reading or writing S3 failed for a reason worth retrying."""


class PayloadError(ValueError):
    """The event is malformed; ``field`` names the bad field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _s3() -> Any:
    """A boto3 S3 client (cached across warm invocations)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint not in _clients:
        import boto3

        _clients[endpoint] = boto3.client("s3", endpoint_url=endpoint or None)
    return _clients[endpoint]


# ---------------------------------------------------------------------------
# Payload
# ---------------------------------------------------------------------------


def _location(event: Mapping[str, Any], name: str, default_bucket: str | None = None) -> dict:
    value = event.get(name)
    if not isinstance(value, Mapping):
        raise PayloadError(name, 'is required: an object {"bucket": ..., "key": ...}')
    bucket = value.get("bucket", default_bucket)
    key = value.get("key")
    if not isinstance(bucket, str) or not bucket:
        raise PayloadError(f"{name}.bucket", "is required: the S3 bucket name")
    if not isinstance(key, str) or not key or key.endswith("/"):
        raise PayloadError(f"{name}.key", "is required: the S3 object key of a file")
    return {"bucket": bucket, "key": key}


def parse_cluster_event(event: Any) -> dict[str, Any]:
    """Validate a cluster event; raise :class:`PayloadError` naming the bad field."""
    from tuned_grid_clustering.cli.settings import SETTING_NAMES, RunSettings, SettingsError

    if not isinstance(event, Mapping):
        raise PayloadError("event", f"must be a JSON object, got {type(event).__name__}")
    known = {*_EVENT_KEYS, *SETTING_NAMES}
    unknown = sorted(set(event) - known)
    if unknown:
        raise PayloadError(unknown[0], f"is not a known field; known: {', '.join(sorted(known))}")
    source = _location(event, "input")
    target = _location(event, "output", default_bucket=source["bucket"])
    if PurePosixPath(target["key"]).suffix.lower() not in FORMATS:
        raise PayloadError("output.key", f"must end with {' or '.join(FORMATS)}")
    if PurePosixPath(source["key"]).suffix.lower() not in (".parquet", ".geoparquet", ".gpkg"):
        raise PayloadError("input.key", "must be a GeoParquet (.parquet) or GeoPackage (.gpkg)")
    partition = event.get("partition", PurePosixPath(source["key"]).stem)
    if not isinstance(partition, (str, int)) or isinstance(partition, bool) or partition == "":
        raise PayloadError("partition", "must be a non-empty text or an integer")
    layer = event.get("layer")
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise PayloadError("layer", "must be a layer name or null")
    try:
        settings = RunSettings.from_json({k: event[k] for k in SETTING_NAMES if k in event})
    except SettingsError as exc:
        raise PayloadError(exc.field, str(exc).split(": ", 1)[-1]) from exc
    return {
        "input": source,
        "output": target,
        "partition": partition,
        "layer": layer,
        "settings": settings,
    }


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


def _download(location: Mapping[str, str], folder: Path) -> Path:
    from botocore.exceptions import ClientError

    path = folder / ("input" + PurePosixPath(location["key"]).suffix.lower())
    try:
        _s3().download_file(location["bucket"], location["key"], str(path))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"):
            raise FileNotFoundError(
                f"cannot read s3://{location['bucket']}/{location['key']} ({code})"
            ) from exc
        raise S3TransferError(
            f"download of s3://{location['bucket']}/{location['key']}: {exc}"
        ) from exc
    except Exception as exc:  # network trouble: worth a retry
        raise S3TransferError(
            f"download of s3://{location['bucket']}/{location['key']}: {exc}"
        ) from exc
    return path


def _upload(path: Path, bucket: str, key: str) -> None:
    try:
        _s3().upload_file(str(path), bucket, key)
    except Exception as exc:
        raise S3TransferError(f"upload to s3://{bucket}/{key}: {exc}") from exc


def _sibling_key(key: str, suffix: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(path.stem + suffix))


def cluster_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Cluster the partition object the event names; see the module docstring."""
    from tuned_grid_clustering.cli import io
    from tuned_grid_clustering.cli.job import cluster_units
    from tuned_grid_clustering.cli.manifest import package_version
    from tuned_grid_clustering.core.partitions import partition_name

    try:
        request = parse_cluster_event(event)
    except PayloadError as exc:
        return {"status": "invalid", "field": exc.field, "error": str(exc)}

    started = time.perf_counter()
    settings = request["settings"]
    partition = request["partition"]
    name = partition_name(partition)
    response: dict[str, Any] = {
        "status": "failed",
        "partition": name,
        "input": request["input"],
        "output": request["output"],
        "package_version": package_version(),
    }
    with tempfile.TemporaryDirectory(prefix="tgc-") as tmp:
        folder = Path(tmp)
        try:
            local_input = _download(request["input"], folder)
        except FileNotFoundError as exc:
            response["error"] = f"FileNotFoundError: {exc}"
            return response
        response["input_sha256"] = io.sha256_file(local_input)
        try:
            units = io.read_units(local_input, layer=request["layer"])
            if settings.partition_field:
                io_fields = [settings.partition_field]
                missing = [f for f in io_fields if f not in units.columns]
                if missing:
                    raise ValueError(f"no field {missing[0]!r} in the input")
                keep = units[settings.partition_field].map(partition_name) == name
                units = units[keep.to_numpy(dtype=bool)]
        except Exception as exc:  # noqa: BLE001 - unreadable data fails this partition
            response["error"] = f"{type(exc).__name__}: {exc}"
            return response

        job = cluster_units(units, partition, settings)
        response.update(job.entry)
        response["partition"] = name
        if not job.ok:
            return response

        target = request["output"]
        local_output = folder / ("output" + PurePosixPath(target["key"]).suffix.lower())
        written = io.write_layers(job.units, job.clusters, local_output)
        outputs = []
        for path in written:
            key = (
                target["key"]
                if path == local_output
                else _sibling_key(target["key"], io.CLUSTERS_SUFFIX + path.suffix)
            )
            _upload(path, target["bucket"], key)
            outputs.append({"bucket": target["bucket"], "key": key, "sha256": io.sha256_file(path)})
        response["outputs"] = outputs
        response["settings"] = settings.to_json()
        response["lambda_seconds"] = round(time.perf_counter() - started, 3)
        entry_path = folder / "entry.json"
        entry_path.write_text(json.dumps(response, indent=2, default=str), encoding="utf-8")
        _upload(entry_path, target["bucket"], _sibling_key(target["key"], ".manifest.json"))
    return response


def _caught_error(item: Mapping[str, Any]) -> str:
    """The message of a failure recorded by the state machine's Catch."""
    error = item.get("error")
    if isinstance(error, Mapping):  # {"Error": ..., "Cause": ...} from Step Functions
        cause = error.get("Cause")
        # A Lambda error's Cause is JSON: {"errorMessage": ..., "errorType": ...}.
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            cause = json.loads(cause).get("errorMessage", cause)
        return f"{error.get('Error', 'Error')}: {cause}"
    return str(error) if error is not None else "unknown error"


def summarize_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Count the Map's results, write the run manifest, say whether the run passed."""
    from tuned_grid_clustering.cli.manifest import new_manifest, summarize
    from tuned_grid_clustering.core.partitions import failed_share_exceeded

    results = event.get("results")
    if not isinstance(results, list):
        return {"status": "invalid", "field": "results", "error": "results: must be a list"}
    share = event.get("max_failed_share", 0.1)
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1:
        return {
            "status": "invalid",
            "field": "max_failed_share",
            "error": f"max_failed_share: must be a number in [0, 1], got {share!r}",
        }
    partitions: dict[str, Any] = {}
    for index, item in enumerate(results):
        if not isinstance(item, Mapping):
            item = {"status": "failed", "error": f"unreadable result: {item!r}"}
        name = str(item.get("partition", f"#{index}"))
        entry = dict(item)
        if entry.get("status") != "ok":
            entry["status"] = "failed" if entry.get("status") != "invalid" else "invalid"
            entry["error"] = _caught_error(entry)
        partitions[name] = entry
    summary = summarize(partitions)
    passed = not failed_share_exceeded(summary["n_failed"], summary["n_partitions"], share)
    response = {"status": "ok", **summary, "max_failed_share": share, "passed": passed}

    location = event.get("manifest")
    if location is not None:
        try:
            target = _location(event, "manifest")
        except PayloadError as exc:
            return {"status": "invalid", "field": exc.field, "error": str(exc)}
        settings = event.get("settings") if isinstance(event.get("settings"), Mapping) else {}
        manifest = new_manifest(command="step-functions", settings=settings, inputs=[])
        manifest["partitions"] = partitions
        manifest["summary"] = {**summary, "passed": passed, "max_failed_share": share}
        with tempfile.TemporaryDirectory(prefix="tgc-") as tmp:
            path = Path(tmp) / "manifest.json"
            path.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            _upload(path, target["bucket"], target["key"])
        response["manifest"] = target
    return response


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda entry point: ``"action"`` is ``"cluster"`` (default) or ``"summarize"``."""
    action = event.get("action", "cluster") if isinstance(event, Mapping) else "cluster"
    if action == "cluster":
        return cluster_event(event)
    if action == "summarize":
        return summarize_event(event)
    return {
        "status": "invalid",
        "field": "action",
        "error": f'action: must be "cluster" or "summarize", got {action!r}',
    }
