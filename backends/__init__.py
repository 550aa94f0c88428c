"""The servers jobs run on: a pool of ComfyUI servers and RunPod Serverless endpoints, seen alike.

`Pool` and `Backend` (pool.py) track which server is healthy and choose one for each job; `Engine`
(runner.py) runs one workflow on one server and brings its files home; runpod.py makes a RunPod
endpoint look like a ComfyUI server, over the HTTP calls of runpod_client.py.
"""

from backends.pool import Backend, Pool, open_backends
from backends.runner import Engine, JobResult

__all__ = ["Backend", "Engine", "JobResult", "Pool", "open_backends"]
