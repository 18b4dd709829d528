"""The AWS Lambda handler against moto's S3 server on loopback, and the state machine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

gpd = pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")
pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from tuned_grid_clustering.cli.job import cluster_units  # noqa: E402
from tuned_grid_clustering.cli.settings import RunSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUCKET = "tgc-test"
PARAMS = {
    "desired_cluster_weight": 60,
    "desired_cluster_radius": 800,
    "initial_max_trials": 12,
    "random_state": 7,
}


def _load_handler():
    spec = importlib.util.spec_from_file_location(
        "tgc_lambda_handler", REPO / "aws" / "lambda_handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lambda_handler = _load_handler()


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 (a random free port), and a client for it."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_SESSION_TOKEN", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        try:
            yield client
        finally:
            server.stop()


@pytest.fixture(scope="module")
def uploaded(s3, units_frame, tmp_path_factory):
    """One object per partition (grids/area-N.parquet) and one with all of them."""
    folder = tmp_path_factory.mktemp("objects")
    keys = {}
    for admin, part in units_frame.groupby("admin"):
        path = folder / f"area-{admin}.parquet"
        part.to_parquet(path)
        keys[int(admin)] = f"grids/area-{admin}.parquet"
        s3.upload_file(str(path), BUCKET, keys[int(admin)])
    bad = units_frame[units_frame["admin"] == 2].copy()
    bad["population"] = -1.0
    bad.to_parquet(folder / "bad.parquet")
    s3.upload_file(str(folder / "bad.parquet"), BUCKET, "grids/bad.parquet")
    units_frame.to_parquet(folder / "all.parquet")
    s3.upload_file(str(folder / "all.parquet"), BUCKET, "grids/all.parquet")
    return keys


def _download_frame(s3, key, tmp_path):
    path = tmp_path / Path(key).name
    s3.download_file(BUCKET, key, str(path))
    return gpd.read_parquet(path) if path.suffix == ".parquet" else path


def _event(input_key, output_key, **extra):
    return {
        "input": {"bucket": BUCKET, "key": input_key},
        "output": {"bucket": BUCKET, "key": output_key},
        "params": dict(PARAMS),
        "weight_field": "population",
        **extra,
    }


def test_round_trip_on_s3(s3, uploaded, units_frame, tmp_path):
    key = uploaded[1]
    response = lambda_handler.handler(_event(key, "out/area-1.parquet"), None)
    assert response["status"] == "ok", response
    assert response["partition"] == "area-1"
    assert [o["key"] for o in response["outputs"]] == [
        "out/area-1.parquet",
        "out/area-1.clusters.parquet",
    ]

    units = _download_frame(s3, "out/area-1.parquet", tmp_path)
    clusters = _download_frame(s3, "out/area-1.clusters.parquet", tmp_path)
    part = units_frame[units_frame["admin"] == 1]
    assert units["cell_id"].tolist() == part["cell_id"].tolist()
    assert units["cluster_id"].str.startswith("area-1/CLUSTER_").all()
    assert set(clusters["cluster_id"]) == set(units["cluster_id"])
    entry = json.loads(s3.get_object(Bucket=BUCKET, Key="out/area-1.manifest.json")["Body"].read())
    assert entry["status"] == "ok" and entry["input_sha256"] == response["input_sha256"]

    # The same clusters as tgc batch's job for a file named area-1.
    local = cluster_units(
        part, "area-1", RunSettings(params=dict(PARAMS), weight_field="population")
    )
    assert units["cluster_id"].tolist() == local.units["cluster_id"].tolist()


def test_partition_field_and_geopackage_output(s3, uploaded, units_frame, tmp_path):
    event = _event("grids/all.parquet", "out/three.gpkg", partition=3, partition_field="admin")
    response = lambda_handler.handler(event, None)
    assert response["status"] == "ok", response
    path = _download_frame(s3, "out/three.gpkg", tmp_path)
    units = gpd.read_file(path, layer="units")
    assert len(units) == int((units_frame["admin"] == 3).sum())
    assert units["cluster_id"].str.startswith("3/CLUSTER_").all()
    assert len(gpd.read_file(path, layer="clusters")) == response["n_clusters"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.pop("params"), "params"),
        (
            lambda e: e["params"].update(desired_cluster_weight="abc"),
            "params.desired_cluster_weight",
        ),
        (lambda e: e["params"].pop("desired_cluster_radius"), "params.desired_cluster_radius"),
        (lambda e: e["params"].update(max_passes=0), "params.max_passes"),
        (lambda e: e["params"].update(colour="red"), "params.colour"),
        (lambda e: e.update(paramz={}), "paramz"),
        (lambda e: e.pop("input"), "input"),
        (lambda e: e["input"].pop("key"), "input.key"),
        (lambda e: e["output"].update(key="out/x.csv"), "output.key"),
        (lambda e: e.update(partition=["a"]), "partition"),
        (lambda e: e.update(weight_field=3), "weight_field"),
        (lambda e: e.update(cluster_shape="blob"), "cluster_shape"),
        (lambda e: e.update(crs="EPSG:4326"), "crs"),
        (lambda e: e.update(override_fields={"colour": "x"}), "override_fields.colour"),
        (lambda e: e.update(action="dance"), "action"),
    ],
)
def test_malformed_payload_names_the_field(change, field):
    event = _event("grids/area-1.parquet", "out/x.parquet")
    change(event)
    response = lambda_handler.handler(event, None)
    assert response["status"] == "invalid"
    assert response["field"] == field
    assert response["error"].startswith(field)


def test_not_an_object():
    response = lambda_handler.handler(["not", "a", "dict"], None)
    assert response == {
        "status": "invalid",
        "field": "event",
        "error": "event: must be a JSON object, got list",
    }


def test_missing_object_and_bad_data_fail_by_name(s3, uploaded):
    missing = lambda_handler.handler(_event("grids/nowhere.parquet", "out/nowhere.parquet"), None)
    assert missing["status"] == "failed" and missing["partition"] == "nowhere"
    assert "s3://tgc-test/grids/nowhere.parquet" in missing["error"]

    bad = lambda_handler.handler(_event("grids/bad.parquet", "out/bad.parquet"), None)
    assert bad["status"] == "failed" and bad["partition"] == "bad"
    assert "negative" in bad["error"]
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/bad")
    assert listed.get("KeyCount", 0) == 0  # nothing written for a failed partition


# ---------------------------------------------------------------------------
# The state machine, run by a small local interpreter of the ASL it uses
# ---------------------------------------------------------------------------


def _path(data, expression, context=None):
    if expression == "$":
        return data
    root, rest = (
        (context, expression[3:]) if expression.startswith("$$.") else (data, expression[2:])
    )
    for part in rest.split("."):
        root = root[part]
    return root


def _select(template, data, context=None):
    if isinstance(template, dict):
        return {
            (key[:-2] if key.endswith(".$") else key): (
                _path(data, value, context) if key.endswith(".$") else _select(value, data, context)
            )
            for key, value in template.items()
        }
    return template


def _with_result(data, result_path, result):
    if result_path in (None, "$"):
        return result
    data = json.loads(json.dumps(data))
    node = data
    parts = result_path[2:].split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = result
    return data


def _matches(errors, name):
    return "States.ALL" in errors or name in errors


def _invoke_with_retries(state, parameters, invoke):
    """(payload, None), or (None, (catcher, error output)) once the retries are used up."""
    attempts = {}
    while True:
        try:
            return invoke(parameters["FunctionName"], parameters["Payload"]), None
        except Exception as exc:  # noqa: BLE001 - Retry, then Catch, as Step Functions does
            error = type(exc).__name__
            retriers = [
                i for i, r in enumerate(state.get("Retry", [])) if _matches(r["ErrorEquals"], error)
            ]
            if retriers:
                index = retriers[0]
                attempts[index] = attempts.get(index, 0) + 1
                if attempts[index] <= state["Retry"][index].get("MaxAttempts", 3):
                    continue
            for catcher in state.get("Catch", []):
                if _matches(catcher["ErrorEquals"], error):
                    cause = json.dumps({"errorMessage": str(exc), "errorType": error})
                    return None, (catcher, {"Error": error, "Cause": cause})
            raise


def run_state_machine(definition, data, invoke, states=None, start=None):
    """Run the ASL subset of state_machine.asl.json: Map, Task, Pass, Choice, Succeed, Fail."""
    states = states or definition["States"]
    name = start or definition["StartAt"]
    while True:
        state = states[name]
        kind = state["Type"]
        if kind == "Map":
            results = []
            for item in _path(data, state["ItemsPath"]):
                context = {"Map": {"Item": {"Value": item}}}
                processor = state["ItemProcessor"]
                results.append(
                    run_state_machine(
                        definition,
                        _select(state["ItemSelector"], data, context),
                        invoke,
                        processor["States"],
                        processor["StartAt"],
                    )
                )
            data = _with_result(data, state.get("ResultPath", "$"), results)
        elif kind == "Task":
            parameters = _select(state["Parameters"], data)
            payload, caught = _invoke_with_retries(state, parameters, invoke)
            if caught is not None:
                catcher, error_output = caught
                data = _with_result(data, catcher["ResultPath"], error_output)
                name = catcher["Next"]
                continue
            result = {"Payload": json.loads(json.dumps(payload))}
            if "ResultSelector" in state:
                result = _select(state["ResultSelector"], result)
            data = _with_result(data, state.get("ResultPath", "$"), result)
            if "OutputPath" in state:
                data = _path(data, state["OutputPath"])
        elif kind == "Pass":
            data = _select(state["Parameters"], data) if "Parameters" in state else data
        elif kind == "Choice":
            chosen = next(
                (
                    c["Next"]
                    for c in state["Choices"]
                    if _path(data, c["Variable"]) == c["BooleanEquals"]
                ),
                state["Default"],
            )
            name = chosen
            continue
        elif kind == "Succeed":
            return _path(data, state.get("OutputPath", "$"))
        elif kind == "Fail":
            return {"failed": state["Error"], "cause": state["Cause"]}
        if state.get("End"):
            return data
        name = state["Next"]


def test_state_machine_definition_is_complete():
    definition = json.loads((REPO / "aws" / "state_machine.asl.json").read_text())
    cluster_map = definition["States"][definition["StartAt"]]
    assert cluster_map["Type"] == "Map" and cluster_map["MaxConcurrency"] >= 1
    task = cluster_map["ItemProcessor"]["States"]["ClusterPartition"]
    assert any("S3TransferError" in r["ErrorEquals"] for r in task["Retry"])
    assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    # Every transition points at a state that exists.
    for states in (definition["States"], cluster_map["ItemProcessor"]["States"]):
        for state in states.values():
            targets = [state.get("Next"), state.get("Default")]
            targets += [c["Next"] for c in state.get("Catch", []) + state.get("Choices", [])]
            assert all(t in states for t in targets if t)


class LambdaCrash(Exception):
    """Stands for an invocation the Lambda service gave up on (out of memory, say)."""


def test_state_machine_records_failures_and_writes_the_manifest(s3, uploaded):
    definition = json.loads((REPO / "aws" / "state_machine.asl.json").read_text())
    transient = {"area-3": 1}  # the first S3 transfer of area-3 fails: retried

    def invoke(function_name, payload):
        assert function_name == "${ClusterFunctionArn}"
        payload = json.loads(json.dumps(payload))
        partition = payload.get("partition")
        if transient.get(partition):
            transient[partition] -= 1
            raise lambda_handler.S3TransferError("connection reset")
        if partition == "area-4":
            raise LambdaCrash("Runtime exited with error: signal: killed")
        return lambda_handler.handler(payload, None)

    items = [
        {"partition": f"area-{a}", "input_key": uploaded[a], "output_key": f"sfn/area-{a}.parquet"}
        for a in (1, 3, 4)
    ] + [{"partition": "bad", "input_key": "grids/bad.parquet", "output_key": "sfn/bad.parquet"}]
    execution_input = json.loads((REPO / "aws" / "example_execution_input.json").read_text())
    execution_input.update(
        bucket=BUCKET, partitions=items, params=dict(PARAMS), manifest_key="sfn/manifest.json"
    )

    outcome = run_state_machine(definition, execution_input, invoke)
    assert outcome["failed"] == "TooManyPartitionsFailed"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="sfn/manifest.json")["Body"].read())
    summary = manifest["summary"]
    assert summary["n_partitions"] == 4 and summary["n_ok"] == 2
    assert set(summary["failed"]) == {"area-4", "bad"}
    assert "LambdaCrash" in summary["failed"]["area-4"]
    assert "negative" in summary["failed"]["bad"]
    assert manifest["partitions"]["area-3"]["status"] == "ok"  # after its retry
    assert transient == {"area-3": 0}

    execution_input["max_failed_share"] = 0.5
    outcome = run_state_machine(definition, execution_input, invoke)
    assert outcome["passed"] is True and outcome["n_failed"] == 2
