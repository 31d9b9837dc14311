"""The test kit: what tests/ and bench/ share to run and measure the real daemon.

- `kit.process`: `Daemon` (`python -m probe serve` as a subprocess) and `stop()`.
- `kit.scrape`: `Scrape`, the one parser of a Prometheus text exposition.
- `kit.procfs`: open fds, /proc status (RSS, threads), CPU seconds of a process.
- `kit.net`: `free_port`, `http_get`; `kit.wait`: `wait_until`.
- `kit.milvus_lite`: a real Milvus server (milvus-lite); `kit.proxy`: a counting TCP proxy.
- `kit.podman`: the image built (on a stand-in base where none can be pulled), containers
  run as the chart runs them, the chart's pods played (`make image` runs it too).

Tests and benchmarks run from the repository root (`python -m pytest`, `python -m bench`),
which puts `kit` on the path. Nothing here imports from tests/ or bench/.
"""
