"""Running one job per image, in this process or in spawned worker processes, without one bad image stopping the rest.

Shared by the long per-image stages (the mask cache, the crop store): each gives a job, a worker initializer and a
callback that records every outcome.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def run_per_image(
    image_ids: Sequence[str],
    job: Callable[[str], Any],
    initializer: Callable[..., None],
    initargs: tuple,
    workers: int,
    record: Callable[[str, Any], None],
) -> None:
    """Call ``job(image_id)`` for every ID and ``record(image_id, result or exception)`` as each one finishes.

    ``workers <= 1`` runs in this process (after ``initializer(*initargs)``); otherwise a pool of ``workers``
    spawned processes, each initialised once. ``job`` must be a module-level function when ``workers > 1``.
    """
    if workers <= 1:
        initializer(*initargs)
        for image_id in image_ids:
            try:
                outcome = job(image_id)
            except Exception as error:  # one bad image must not stop the others
                outcome = error
            record(image_id, outcome)
        return
    # "spawn": forking a parent that already runs OpenCV/OpenMP threads can deadlock the children.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as pool:
        futures = {pool.submit(job, image_id): image_id for image_id in image_ids}
        for future in as_completed(futures):
            error = future.exception()
            record(futures[future], error if error is not None else future.result())
