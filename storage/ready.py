"""Wait until the object store can store, creating the bucket: ``python -m storage.ready``.

Settings come from the environment (:meth:`S3Settings.from_env`: ``SHOAL_S3_ENDPOINT``,
credentials, ``SHOAL_S3_BUCKET``). Readiness is a real write, read back and deleted, not an
open port: SeaweedFS answers on its S3 port before its volume server can store anything.
``SHOAL_S3_READY_TIMEOUT`` (seconds, default 60) bounds the wait; past it the last error is
printed and the exit status is 1; a setting that cannot be used is named, with status 2.
Compose runs it as a one-shot job the controller waits for.
"""

from __future__ import annotations

import sys
import time
import uuid

from runtime import config

from .errors import StorageAccessDenied
from .settings import S3Settings
from .store import ObjectStore


def wait_ready(store: ObjectStore, timeout: float, interval: float = 0.5) -> float:
    """Create the bucket and round-trip an object; retry until ``timeout`` seconds passed.
    Returns the seconds it took. Refused credentials fail at once: waiting cannot fix them."""
    t0 = time.monotonic()
    key = f"readiness/{uuid.uuid4().hex}"
    while True:
        try:
            store.ensure_bucket()
            store.put_bytes(key, b"ok")
            if store.get_bytes(key) != b"ok":
                raise RuntimeError("the object read back differs from the one written")
            store.delete(key)
            return time.monotonic() - t0
        except StorageAccessDenied:
            raise
        except Exception as e:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"not ready after {timeout:g} s: {e}") from e
            print(f"waiting for the object store: {e}", flush=True)
            time.sleep(interval)


def main() -> None:
    try:
        settings = S3Settings.from_env()
        timeout = config.S3_READY_TIMEOUT.get()
    except config.ConfigError as e:
        print(f"object store: error: {e.message}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        took = wait_ready(ObjectStore(settings), timeout)
    except Exception as e:
        print(f"object store {settings.endpoint}: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"object store {settings.endpoint} ready, bucket {settings.bucket!r} ({took:.1f} s)")


if __name__ == "__main__":
    main()
