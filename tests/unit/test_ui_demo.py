"""Try-it's model servers die with the UI process, whichever thread started them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import alive

# A UI process that starts a long-running "server" from a short-lived thread (as a Gradio
# worker thread does), checks it outlives that thread, then is killed outright.
UI_PROCESS = textwrap.dedent("""
    import os, signal, sys, threading, time
    from pathlib import Path
    from voxtune.ui.demo import DemoServers

    servers, started = DemoServers(Path(sys.argv[1])), []
    worker = threading.Thread(target=lambda: started.append(servers.spawn(
        [sys.executable, "-c", "import time; time.sleep(120)"], Path(sys.argv[1]) / "log")))
    worker.start()
    worker.join()
    time.sleep(0.5)
    print(started[0].pid, started[0].poll() is None, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_a_demo_server_outlives_its_thread_and_dies_with_the_ui(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", UI_PROCESS, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    pid_text, running = done.stdout.split()
    pid = int(pid_text)
    try:
        assert running == "True", "the server died with the thread that started it"
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid), "the server outlived the UI process"
    finally:
        if alive(pid):
            os.kill(pid, 9)
