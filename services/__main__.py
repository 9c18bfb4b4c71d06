import signal
import sys

# Before the imports (a second or two): a SIGUSR2 that asks for a service's tasks (shared/http.log_tasks)
# while the process is still starting must not end it, which is the signal's default.
signal.signal(signal.SIGUSR2, signal.SIG_IGN)

from services.cli import main  # noqa: E402

sys.exit(main())
