"""Wall time and peak memory of every solution notebook, run top to bottom on this machine.

The budget (DESIGN.md): at most 60 s and 1.5 GB per notebook on a 2-core CPU. Memory is the
peak resident memory of the notebook's kernel and everything it starts, sampled every 50 ms.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

from autograder.grade import tree_rss

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 60.0
BUDGET_MB = 1536.0


def _kernel_rss(client: NotebookClient) -> int:
    km = getattr(client, "km", None)
    process = getattr(getattr(km, "provisioner", None), "process", None)
    try:
        return tree_rss(psutil.Process(process.pid)) if process is not None else 0
    except psutil.Error:
        return 0


def measure(path: Path) -> tuple[float, float]:
    """(seconds, peak MB) of one top-to-bottom run; raises if a cell fails."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _kernel_rss(client))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    try:
        client.execute(stderr=subprocess.DEVNULL)  # the kernel's own start-up chatter
    finally:
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    return seconds, peak[0] / 2**20


def main(selected: list[str]) -> int:
    paths = [Path(p).resolve() for p in selected] or sorted((ROOT / "solutions").glob("*/*.ipynb"))
    print(f"{'notebook':<40} {'time (s)':>9} {'peak (MB)':>10}  budget {BUDGET_S:.0f} s, "
          f"{BUDGET_MB:.0f} MB")
    over = 0
    for path in paths:
        name = f"{path.parent.name}/{path.name}"
        try:
            seconds, mb = measure(path)
        except Exception as error:  # report and go on: one broken notebook must not hide the rest
            print(f"{name:<40} failed: {type(error).__name__}: {str(error)[:200]}")
            over += 1
            continue
        ok = seconds <= BUDGET_S and mb <= BUDGET_MB
        over += not ok
        print(f"{name:<40} {seconds:9.1f} {mb:10.0f}  {'ok' if ok else 'OVER BUDGET'}",
              flush=True)
    print(f"{len(paths) - over}/{len(paths)} notebooks within budget")
    return 1 if over else 0
