"""The test suite, its stand-ins (`tests.standins`) and fakes, shared with the bench."""

import os

# onnxruntime (a Vision-Agents dependency) sends a telemetry DNS lookup unless this is set before it is imported:
# this package is imported first by every test and bench process.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
