"""Power loss while the console saves: its own files are the old or the new version, never broken.

tests/e2e/test_store.py cuts the power (SIGKILL) under Store.save_credential; this adds the two
files the console changes: the installer PIN record (console-pin.json) and the ``config set``
values (settings.json). Both go through the store, as the console's back-end writes them (its
SavePin and SaveValue effects). A child process saves both in a loop; it is killed at a random
moment, and the files must parse and hold one of the versions it wrote.
"""

from __future__ import annotations

import json
import random
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pttd.radio.console.pin import pin_matches
from pttd.radio.status import PinRecord
from pttd.radio.store import PIN_FILE, SETTINGS_FILE

SAVE_FOREVER = """
    import sys
    from pathlib import Path

    from pttd.radio.console.pin import hash_pin
    from pttd.radio.store import Store

    store = Store(Path(sys.argv[1]))
    start = int(sys.argv[2])
    i = start
    while True:
        store.update_settings(
            values={"talk.timeout": float(i), "device.name": "gate-" + "x" * (i % 200)}
        )
        store.save_pin(hash_pin(f"pin-{i}", n=16))
        if i == start:
            print("saving", flush=True)
        i += 1
"""


def test_power_loss_leaves_the_old_or_the_new_console_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rng = random.Random(4711)
    start = 1
    for _ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SAVE_FOREVER), str(state), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "saving\n"
            time.sleep(rng.uniform(0.0, 0.03))
        finally:
            proc.kill()  # SIGKILL: no clean-up runs, as at a power cut
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()

        values = json.loads((state / SETTINGS_FILE).read_bytes())["values"]
        written = int(values["talk.timeout"])
        assert written >= start
        assert values["device.name"] == "gate-" + "x" * (written % 200)
        record = PinRecord.from_json(json.loads((state / PIN_FILE).read_bytes()))
        # The PIN saved right after those values, or the one before them.
        assert pin_matches(record, f"pin-{written}") or pin_matches(record, f"pin-{written - 1}")
        assert stat.S_IMODE((state / PIN_FILE).stat().st_mode) == 0o600
        start = written + 1
