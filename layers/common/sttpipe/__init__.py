"""Serverless speech-to-text batch pipeline: the code shared by every function (the Lambda layer)."""

PIPELINE_VERSION = "1"
