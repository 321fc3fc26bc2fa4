"""A module whose import leaves a thread running (as some engines' imports do): the template
tests preload it to check that such a template is refused. The thread waits forever, idle."""

import threading

_never = threading.Event()
threading.Thread(target=_never.wait, name="threaded-import", daemon=True).start()
