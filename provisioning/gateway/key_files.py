"""Key files the employer's commands may make, and when they may not.

The INSS key and the worker-reference key are made on first use. For a database that already
holds workers, a missing key file is a wrong path (``--inss-key`` typo, another folder): a new
key would seal new INSS numbers the old ones never match and derive new worker references
(twins on the next import). So a key file is made only for a database without workers.
"""

from __future__ import annotations

from pathlib import Path

from siteclock.provisioning.gateway.workers_csv import WorkerError


def keys_belong_to(db: Path, keys: list[tuple[str, Path]]) -> None:
    """A key file is made only for a database that holds no workers yet: for one that does, a
    missing key is a wrong path, and a new key would seal new INSS numbers (and derive new
    worker references, so twins) that the old key's workers never match."""
    from siteclock.gateway.db import open_gateway_db

    missing = [(flag, path) for flag, path in keys if not path.exists()]
    if not missing:
        return
    handle, owned = open_gateway_db(db)
    try:
        has_workers = bool(handle.worker_listing(None))
    finally:
        if owned:
            handle.close()
    if has_workers:
        flag, path = missing[0]
        raise WorkerError(
            f"{flag} {path}: no such key file, but {db} already holds workers sealed with one; "
            f"give the right {flag} (a new key would not match them)"
        )
    for flag, path in missing:
        print(f"new key file {path} ({flag}); back it up: the workers saved with it need it")


__all__ = ["keys_belong_to"]
