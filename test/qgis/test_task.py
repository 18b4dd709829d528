"""The algorithm as a background QgsProcessingAlgRunnerTask, as the Processing dialog runs it."""

from __future__ import annotations

import time

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsTask,
)
from qgis.PyQt.QtCore import QCoreApplication

ALG = "gridsampling:tunedgridclustering"


class Run:
    """A runner task on the task manager, with its outcome recorded."""

    def __init__(self, parameters: dict) -> None:
        self.algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
        self.context = QgsProcessingContext()
        self.feedback = QgsProcessingFeedback()
        self.context.setFeedback(self.feedback)
        self.outcome: dict = {}
        self.task = QgsProcessingAlgRunnerTask(
            self.algorithm, parameters, self.context, self.feedback
        )
        self.task.executed.connect(self._executed)
        self.started = time.monotonic()
        QgsApplication.taskManager().addTask(self.task)

    def _executed(self, ok: bool, results: dict) -> None:
        self.outcome = {"ok": ok, "results": results, "at": time.monotonic()}

    def wait(self, timeout: float, until=None) -> None:
        """Spin the event loop until the task ends (or ``until()`` is true)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            QCoreApplication.processEvents()
            if self.outcome or (until is not None and until()):
                return
            time.sleep(0.01)
        raise AssertionError(f"the task did not finish within {timeout} s")


def test_task_completes(ph_window, ph_window_settings):
    run = Run(
        {
            "INPUT": ph_window,
            **ph_window_settings,
            "INITIAL_TRIALS": 3,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        }
    )
    run.wait(60)
    assert run.outcome["ok"], "the task failed"
    results = run.outcome["results"]
    units = QgsProcessingUtils.mapLayerFromString(results["OUTPUT"], run.context)
    clusters = QgsProcessingUtils.mapLayerFromString(results["OUTPUT_CLUSTERS"], run.context)
    assert units.featureCount() == 3600
    assert clusters.featureCount() == results["N_CLUSTERS"] > 5
    assert run.feedback.progress() == 100


def test_cancel_stops_within_two_seconds(ph_points):
    # Small clusters split again and again: ~7 s of clustering on the whole ph grid.
    run = Run(
        {
            "INPUT": ph_points,
            "WEIGHT_FIELD": "population",
            "TARGET_WEIGHT": 60,
            "TARGET_RADIUS": 500,
            "MAX_WEIGHT": 60,
            "MAX_PASSES": 10,
            "INITIAL_TRIALS": 100,
            "SUBSEQUENT_TRIALS": 20,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        }
    )
    # Cancel once the clustering itself runs (progress beyond reading the features).
    run.wait(60, until=lambda: run.feedback.progress() > 12)
    assert not run.outcome, "the run ended before it could be cancelled"
    cancelled_at = time.monotonic()
    run.task.cancel()
    run.wait(10)
    stopped_after = run.outcome["at"] - cancelled_at
    print(f"cancelled task stopped after {stopped_after:.2f} s")
    assert not run.outcome["ok"]
    assert run.task.status() == QgsTask.Terminated
    assert stopped_after < 2.0, f"took {stopped_after:.2f} s to stop"
